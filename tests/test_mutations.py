"""Edited models: every path decodes what the edited plain model decodes, or steps aside, or refuses.

Each edit is what a user trying an idea does: some keep the model's function (an RNN or attention
subclass, an equal rewrite of Encoder.forward, a docstring), some change it (a scaled dot score, a layer
norm on s~, the memory halved, another bridge). For each, greedy, beam and n-best outputs and scores of
`Translator` (the engine and the fast paths), and of the export run by `seqattn_runtime`, equal those of
the plain search over the edited plain model; an export that cannot be faithful is refused.
"""

import inspect
import sys
import textwrap

import pytest
import torch
from conftest import reverse_pairs, write_tiny_config
from torch import nn

from seqattn.config import load_config
from seqattn.data.batching import pad_sources
from seqattn.errors import SeqattnError
from seqattn.export import export, tokenizer_files
from seqattn.fast import Decoding, accelerate
from seqattn.model.attention import Attention
from seqattn.model.decoder import Decoder
from seqattn.model.encoder import Encoder
from seqattn.model.seq2seq import Seq2Seq
from seqattn.search import beam_search, greedy, max_lengths
from seqattn.train import Trainer
from seqattn.translator import SearchOptions, Translator, _load_model
from seqattn_runtime import Runtime

SEARCHES = [(1, 1), (3, 1), (3, 3)]   # (beam, nbest): greedy, beam search, n-best


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small reversal model (LSTM, dot attention: every fast path applies to it) and lines to translate."""
    tmp = tmp_path_factory.mktemp("mutations")
    pairs = reverse_pairs(60, seed=4)
    Trainer(load_config(write_tiny_config(tmp, pairs, train__max_steps=120, train__valid_every=120))).run()
    return tmp / "model", [s for s, _ in pairs[:14]]


def edited(tmp_path, cls, name: str, old: str, new: str):
    """Return cls.name with `old` replaced by `new` in its source, compiled from a file of its own (so that,
    as with a user's edit, its source can be read), in its module's namespace."""
    source = textwrap.dedent(inspect.getsource(getattr(cls, name)))
    assert old in source, (cls, name, old)
    path = tmp_path / f"{cls.__name__}_{name}_{abs(hash(new))}.py"
    path.write_text(source.replace(old, new))
    namespace = dict(vars(sys.modules[cls.__module__]))
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace[name]


class OwnLSTM(nn.LSTM):
    """A cell of one's own, here computing what nn.LSTM computes."""

    def forward(self, x, hx=None):
        return super().forward(x, hx)


class OwnAttention(Attention):
    """An attention of one's own, here computing what Attention computes."""

    def forward(self, query, keys, values, mask):
        return super().forward(query, keys, values, mask)


def _rnn_subclass(model):
    own = OwnLSTM(model.decoder.rnn.input_size, model.decoder.rnn.hidden_size, batch_first=True)
    own.load_state_dict(model.decoder.rnn.state_dict())
    model.decoder.rnn = own


def _attention_subclass(model):
    own = OwnAttention("dot", model.decoder.hidden_size, model.encoder.out_size)
    own.load_state_dict(model.decoder.attention.state_dict())
    model.decoder.attention = own


# name -> (keeps the function, [(class, method, old source, new source)], edit of the model instance)
EDITS = {
    "rnn_subclass": (True, [], _rnn_subclass),
    "attention_subclass": (True, [], _attention_subclass),
    "encoder_rewritten": (True, [(Encoder, "forward", "memory, _ = pad_packed_sequence(",
                                  "memory, lengths = pad_packed_sequence(")], None),
    "docstring": (True, [(Encoder, "forward", '"""Return (memory', '"""Return, as the seed has it, (memory'),
                         (Decoder, "step", '"""One decoding step', '"""One step of decoding')], None),
    "scaled_dot": (False, [(Attention, "scores", "return torch.bmm(query, keys.transpose(1, 2))",
                            "return torch.bmm(query, keys.transpose(1, 2)) / query.size(-1) ** 0.5")], None),
    "layer_norm": (False, [(Decoder, "attend", "return self.dropout(s_tilde), alpha",
                            "return self.dropout(nn.functional.layer_norm(s_tilde, (self.hidden_size,))), alpha")],
                   None),
    "memory_halved": (False, [(Encoder, "forward", "return self.dropout(memory), final",
                               "return self.dropout(memory) * 0.5, final")], None),
    "another_bridge": (False, [(Seq2Seq, "initial_state", "if self.bridge is not None:",
                                "states = tuple(-s for s in states)\n    if self.bridge is not None:")], None),
}


def plain_outputs(model: Seq2Seq, translator: Translator, lines: list[str], beam: int, nbest: int):
    """Return each line's nbest (text, score) from the plain search over the plain model."""
    ids = translator.tok.src.encode(lines)
    src, src_len = pad_sources(ids)
    limit = max_lengths(src_len, translator.cfg.decode.max_output_ratio)
    model.eval()
    if beam == 1:
        found = [[h] for h in greedy(model, src, src_len, limit)]
    else:
        found = beam_search(model, src, src_len, limit, beam, alpha=1.0, nbest=nbest)
    return [[(translator.tok.tgt.decode(h.ids), h.score) for h in n] for n in found]


def assert_equal_outputs(got, want, what):
    assert [[t for t, _ in n] for n in got] == [[t for t, _ in n] for n in want], what
    assert [s for n in got for _, s in n] == pytest.approx([s for n in want for _, s in n], abs=1e-4), what


@pytest.mark.parametrize("name", list(EDITS))
def test_every_path_decodes_what_the_edited_model_decodes(name, trained, tmp_path, monkeypatch):
    model_dir, lines = trained
    keeps, methods, instance_edit = EDITS[name]
    stock_plain, cfg, tok = _load_model(model_dir, None, torch.device("cpu"), None, fast=False)
    stock = Translator(stock_plain, tok, cfg, torch.device("cpu"))
    stock_paths = Decoding(stock_plain).paths
    before = {search: plain_outputs(stock_plain, stock, lines, *search) for search in SEARCHES}   # unedited
    for cls, method, old, new in methods:
        monkeypatch.setattr(cls, method, edited(tmp_path, cls, method, old, new))
    plain, _, _ = _load_model(model_dir, None, torch.device("cpu"), None, fast=False)
    fast, _, _ = _load_model(model_dir, None, torch.device("cpu"), None, fast=False)
    if instance_edit:
        instance_edit(plain)
        instance_edit(fast)
    accelerate(fast)
    translator = Translator(fast, tok, cfg, torch.device("cpu"), fixed_weights=True)
    if name == "docstring":   # a docstring changes nothing: every fast path still applies
        assert Decoding(fast).paths == stock_paths and "decoder_cells" in stock_paths
    try:
        export(plain, tokenizer_files(model_dir), tmp_path / "export", cfg.data.max_len, cfg.decode.max_output_ratio)
        runtime = Runtime(tmp_path / "export")
    except SeqattnError as e:
        runtime = None
        assert "cannot export" in str(e) or "differ from the model's" in str(e)
    changed = False
    for beam, nbest in SEARCHES:
        want = plain_outputs(plain, translator, lines, beam, nbest)
        options = SearchOptions(beam=beam, nbest=nbest, alpha=1.0)
        got = [[(t.text, t.score) for t in n] for n in translator.translate_n(lines, batch_size=4, options=options)]
        assert_equal_outputs(got, want, f"{name}: translate, beam {beam}, nbest {nbest}")
        if runtime is not None:
            exported = [[(t.text, t.score) for t in n] for n in runtime.translate_n(lines, beam, nbest, 1.0, 4)]
            assert_equal_outputs(exported, want, f"{name}: runtime, beam {beam}, nbest {nbest}")
        if keeps:
            assert_equal_outputs(want, before[beam, nbest], f"{name} keeps the function")
        changed |= any(t != u or abs(x - y) > 1e-3 for n, m in zip(want, before[beam, nbest])
                       for (t, x), (u, y) in zip(n, m))
    assert changed != keeps          # the edits that change the function change some output or score
    assert runtime is not None       # each of these edits exports (see below for the refused ones)


@pytest.mark.parametrize("cls,method,old,new,error", [
    (Encoder, "forward", "return self.dropout(memory), final",   # a value of the traced batch baked in
     "return self.dropout(memory) * float(src_len.float().mean()), final", "differ from the model's"),
    (Decoder, "attend", "return self.dropout(s_tilde), alpha",   # a shape the exporter cannot express
     "return self.dropout(torch.nn.functional.layer_norm(s_tilde, s_tilde.shape[-1:])), alpha",
     "cannot export this model's step")])
def test_an_export_that_cannot_be_faithful_is_refused(cls, method, old, new, error, trained, tmp_path, monkeypatch,
                                                      capfd):
    """An edit the tracer cannot export, or whose trace would compute something else on other sentences
    (the check against the model), is a one-line error, and nothing is left as an export."""
    model_dir, _ = trained
    monkeypatch.setattr(cls, method, edited(tmp_path, cls, method, old, new))
    plain, cfg, _ = _load_model(model_dir, None, torch.device("cpu"), None, fast=False)
    with pytest.raises(SeqattnError, match=error) as refused:
        export(plain, tokenizer_files(model_dir), tmp_path / "export", cfg.data.max_len, cfg.decode.max_output_ratio)
    assert "\n" not in str(refused.value) and not (tmp_path / "export" / "seqattn.json").exists()
    assert capfd.readouterr() == ("", "")   # the exporter's own dumps are kept quiet


def test_the_decoder_rnn_subclass_of_the_regression(trained):
    """The first case found: with the decoder's nn.LSTM replaced by a subclass with the same weights, the
    fast step stepped aside while its encode kept W_ca h as the memory, and the model's step applied W_ca
    twice: every output wrong, no error. The step path now applies whole or not at all."""
    model_dir, lines = trained
    model, cfg, tok = _load_model(model_dir, None, torch.device("cpu"), None, fast=False)
    reference = Translator.load(model_dir, device="cpu").translate(lines)
    _rnn_subclass(model)
    accelerate(model)
    decoding = Decoding(model.eval())
    assert "decoder_cells" not in decoding.paths and "split_combine" not in decoding.paths
    got = Translator(model, tok, cfg, torch.device("cpu"), fixed_weights=True).translate(lines)
    assert [t.text for t in got] == [t.text for t in reference]
    assert [t.score for t in got] == pytest.approx([t.score for t in reference], abs=1e-4)
