"""seqattn export + seqattn_runtime: every architecture option round-trips, without PyTorch, and a broken
export is a one-line error."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import reverse_pairs, write_tiny_config

from seqattn.config import load_config
from seqattn.export import export_model_dir
from seqattn.train import Trainer
from seqattn.translator import SearchOptions, Translator
from seqattn_runtime import ExportError, Runtime
from seqattn_runtime.search import Sampling
from seqattn_runtime.translator import VERSION

ARCHITECTURES = {
    "lstm-dot": {},
    "gru-none-2layers": dict(model__rnn="gru", model__attention="none", model__layers=2),
    "lstm-general-feeding-2layers": dict(model__attention="general", model__input_feeding=True, model__layers=2),
    "gru-concat-feeding": dict(model__rnn="gru", model__attention="concat", model__input_feeding=True),
    "lstm-bridge-unidirectional-concat": dict(model__bidirectional=False, model__enc_hidden_size=24,
                                              model__attention="concat"),
    "separate-vocabularies-tied": dict(data__joint_vocab=False, model__tie_embeddings=True, model__emb_size=64),
}


EVERY = pytest.mark.parametrize("exported", list(ARCHITECTURES), indirect=True)
ONE = pytest.mark.parametrize("exported", ["lstm-dot"], indirect=True)    # for what no architecture changes


@pytest.fixture(scope="module")
def exported(request, tmp_path_factory):
    """(translator, runtime, pairs, directory, export meta) of ARCHITECTURES[the test's parameter], trained
    and exported once per module."""
    tmp = tmp_path_factory.mktemp(request.param)
    pairs = reverse_pairs(40, seed=2)
    overrides = dict(train__max_steps=40, train__valid_every=40, **ARCHITECTURES[request.param])
    Trainer(load_config(write_tiny_config(tmp, pairs, **overrides))).run()
    meta = export_model_dir(tmp / "model", tmp / "export")
    meta["name"] = request.param
    return Translator.load(tmp / "model", device="cpu"), Runtime(tmp / "export"), pairs, tmp, meta


def _same(pt, ox):
    assert ox.text == pt.text and ox.src_tokens == pt.src_tokens and ox.tgt_tokens == pt.tgt_tokens
    assert abs(ox.score - pt.score) < 1e-4
    assert (ox.attention is None) == (pt.attention is None)
    if pt.attention:
        assert np.shape(ox.attention) == np.shape(pt.attention)
        assert np.abs(np.array(ox.attention) - np.array(pt.attention)).max() < 1e-4


@EVERY
def test_the_runtime_translates_as_pytorch_does_greedy_beam_and_nbest(exported):
    translator, runtime, pairs, _, meta = exported
    assert meta["max_diff"] < 1e-4
    lines = [s for s, _ in pairs[:12]] + ["", "   ", "cat " * 30]
    for beam, nbest, alpha in ((1, 1, 1.0), (3, 2, 1.0), (4, 4, 0.0)):
        want = translator.translate_n(lines, batch_size=5, attention=True,
                                      options=SearchOptions(beam=beam, nbest=nbest, alpha=alpha))
        got = runtime.translate_n(lines, beam, nbest, alpha, batch_size=5, attention=True)
        assert [len(g) for g in got] == [len(w) for w in want]
        for g_list, w_list in zip(got, want):
            for g, w in zip(g_list, w_list):
                _same(w, g)
    assert runtime.translate(["", "apple"], attention=False)[0].text == ""
    # sampling: the same draws for the same seed (a function of seed, line, sample and step)
    options = SearchOptions(sample=True, seed=7, num_samples=2, temperature=1.3, top_k=8)
    want = translator.translate_n(lines, batch_size=5, options=options)
    got = runtime.translate_n(lines, batch_size=5, sampling=Sampling(1.3, 8, 1.0, 7), num_samples=2)
    assert [[t.text for t in n] for n in got] == [[t.text for t in n] for n in want]
    assert [t.score for n in got for t in n] == pytest.approx([t.score for n in want for t in n], abs=1e-4)


@EVERY
def test_the_step_graph_is_the_arranged_step(exported):
    """The step graph traces `Decoding(model, packed=False)`: cells as products (no RNN operator), and with
    attention the W_c split, whose context W_ca h_i the encoder gives once per batch."""
    import onnx

    *_, tmp, meta = exported
    ops = {n.op_type for n in onnx.load(str(tmp / "export" / "step.onnx")).graph.node}
    assert not ops & {"LSTM", "GRU", "RNN"} and {"Gemm", "Sigmoid", "Tanh"} <= ops
    attends = meta["attention"] != "none"
    assert ("context" in meta["encoder_outputs"]) == ("context" in meta["step_inputs"]) == attends


@EVERY
def test_beam_search_takes_the_step_graphs_ranking_and_finds_what_the_full_ranking_finds(exported, tmp_path,
                                                                                       monkeypatch):
    """The step graph ranks each row's best ids (TopK); beam search builds its candidates from them and finds
    the same n-best lists, scores included, as from the full log-probabilities, which an export of version 2
    (no ranking: the graph without it) still decodes with."""
    import shutil

    import onnx

    from seqattn_runtime import search

    _, runtime, pairs, tmp, meta = exported
    lines = [s for s, _ in pairs[:16]]
    merged = []
    merge = search.merge_ranked
    monkeypatch.setattr(search, "merge_ranked", lambda *a: merged.append(merge(*a)) or merged[-1])
    ranked = runtime.translate_n(lines, 3, 3, 1.0, batch_size=6)
    assert merged and sum(m is not None for m in merged) > len(merged) / 2
    old = tmp_path / "v2"
    shutil.copytree(tmp / "export", old)
    graph = onnx.load(str(old / "step.onnx"))
    for part, keep in ((graph.graph.node, lambda x: x.op_type != "TopK"),
                       (graph.graph.input, lambda x: x.name != "top_k"),
                       (graph.graph.output, lambda x: x.name not in ("top_logp", "top_ids"))):
        kept = [x for x in part if keep(x)]
        del part[:]
        part.extend(kept)
    onnx.save(graph, str(old / "step.onnx"))
    (old / "seqattn.json").write_text(json.dumps({**meta, "version": 2, "step_inputs": meta["step_inputs"][:-1],
                                                  "step_outputs": meta["step_outputs"][:-2]}))
    merged.clear()
    full = Runtime(old).translate_n(lines, 3, 3, 1.0, batch_size=6)
    assert not merged
    assert [[(t.text, t.score) for t in n] for n in full] == [[(t.text, t.score) for t in n] for n in ranked]


def test_the_export_check_refuses_a_ranking_out_of_order(tmp_path):
    """The export's check holds the step's TopK to a stable sort of its own log-probabilities."""
    from seqattn.errors import SeqattnError
    from seqattn.export import _check_ranking

    logp = np.array([[-1.0, -0.5, -0.5, -2.0]], np.float32)
    _check_ranking(tmp_path, logp, np.array([[-0.5, -0.5]], np.float32), np.array([[1, 2]]))
    with pytest.raises(SeqattnError, match="top_ids"):
        _check_ranking(tmp_path, logp, np.array([[-0.5, -0.5]], np.float32), np.array([[2, 1]]))


@EVERY
def test_the_runtime_imports_no_torch(exported):
    """A subprocess in which importing torch fails translates with the export."""
    translator, _, pairs, tmp, _ = exported
    code = (
        "import sys, json\n"
        "class NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch is not installed here')\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "from seqattn_runtime import Runtime\n"
        "out = Runtime(sys.argv[1]).translate(json.loads(sys.argv[2]), beam=3)\n"
        "assert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules)\n"
        "print(json.dumps([t.text for t in out]))\n")
    lines = [s for s, _ in pairs[:5]]
    proc = subprocess.run([sys.executable, "-c", code, str(tmp / "export"), json.dumps(lines)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    expected = [t.text for t in translator.translate(lines, options=SearchOptions(beam=3))]
    assert json.loads(proc.stdout) == expected


@ONE
def test_the_commands_export_and_translate(tmp_path, exported):
    translator, _, pairs, tmp, meta = exported
    out = tmp_path / "exp"
    done = subprocess.run([sys.executable, "-m", "seqattn", "export", str(tmp / "model"), "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0 and "checked" in done.stdout, done.stderr
    assert done.stderr == ""                                      # the exporter's native warnings are kept quiet
    src = "\n".join(s for s, _ in pairs[:6]) + "\n"
    got = subprocess.run([sys.executable, "-m", "seqattn_runtime.cli", "translate", str(out), "--beam", "3",
                          "--nbest", "2", "--attention", str(tmp_path / "att.json")], input=src,
                         capture_output=True, text=True)
    assert got.returncode == 0, got.stderr
    want = subprocess.run([sys.executable, "-m", "seqattn", "translate", str(tmp / "model"), "--beam", "3",
                           "--nbest", "2"], input=src, capture_output=True, text=True)
    assert got.stdout == want.stdout and len(got.stdout.splitlines()) == 12
    records = json.loads((tmp_path / "att.json").read_text())
    assert len(records) == 12 and records[0]["source"] == pairs[0][0] and records[0]["attention"]
    sample = ["--sample", "--seed", "3", "--num-samples", "2", "--temperature", "2.0"]
    got = subprocess.run([sys.executable, "-m", "seqattn_runtime.cli", "translate", str(out), *sample], input=src,
                         capture_output=True, text=True)
    want = subprocess.run([sys.executable, "-m", "seqattn", "translate", str(tmp / "model"), *sample], input=src,
                          capture_output=True, text=True)
    assert got.returncode == 0 and got.stdout == want.stdout and len(got.stdout.splitlines()) == 12, got.stderr
    for bad in (["--num-samples", "2"], ["--sample", "--beam", "2"], ["--sample", "--top-p", "0"]):
        refused = subprocess.run([sys.executable, "-m", "seqattn_runtime.cli", "translate", str(out), *bad],
                                 input=src, capture_output=True, text=True)
        assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1, (bad, refused.stderr)


NO_TORCH = (
    "import sys\n"
    "class NoTorch:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'torch' or name.startswith('torch.'):\n"
    "            raise ImportError('torch is not installed here')\n"
    "sys.meta_path.insert(0, NoTorch())\n")


@ONE
def test_seqattn_runtime_serve_answers_as_seqattn_serve_without_torch(exported, tmp_path):
    """`seqattn-runtime serve`, in a process where torch cannot be imported: the same API, limits, page and
    answers as the PyTorch server's app."""
    import socket
    import time
    import urllib.error
    import urllib.request

    from fastapi.testclient import TestClient

    from seqattn_runtime.serve.app import create_app

    translator, _, pairs, tmp, meta = exported
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = NO_TORCH + "from seqattn_runtime.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    server = subprocess.Popen([sys.executable, "-c", code, "serve", str(tmp / "export"), "--port", str(port),
                               "--max-texts", "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"

    def call(path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url + path, data, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.communicate()[1]
            try:
                if call("/health") == (200, '{"status":"ok"}'):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "seqattn-runtime serve did not start"
            time.sleep(0.2)
        info = json.loads(call("/info")[1])
        assert info["runtime"] == "onnxruntime" and info["limits"]["max_texts"] == 3
        lines = [s for s, _ in pairs[:3]]
        body = {"texts": lines, "beam": 3, "nbest": 2, "attention": True}
        status, got = call("/translate", body)
        want = TestClient(create_app(translator)).post("/translate", json=body).json()
        assert status == 200 and [t["translation"] for t in json.loads(got)["translations"]] == \
            [t["translation"] for t in want["translations"]]
        assert call("/translate", {"texts": lines * 2})[0] == 422                    # the limits it was given
        page, docs = call("/"), call("/docs")
        assert page[0] == 200 and "/static/app.js" in page[1] and call("/static/app.js")[0] == 200
        assert docs[0] == 200 and "swagger" in docs[1].lower()
    finally:
        server.terminate()
        server.wait(timeout=30)
    missing = subprocess.run([sys.executable, "-m", "seqattn_runtime.cli", "serve", str(tmp_path / "nope"),
                              "--port", str(port)], capture_output=True, text=True)
    assert missing.returncode == 2 and "seqattn.json: not found" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


@ONE
def test_a_broken_or_mismatched_export_is_a_one_line_error(tmp_path, exported):
    _, _, _, tmp, meta = exported
    import shutil

    def broken(name, edit):
        d = tmp_path / name
        shutil.copytree(tmp / "export", d)
        edit(d)
        return d

    cases = {
        "truncated": (lambda d: (d / "step.onnx").write_bytes((d / "step.onnx").read_bytes()[:500]), "step.onnx"),
        "no_meta": (lambda d: (d / "seqattn.json").unlink(), "seqattn.json"),
        "bad_json": (lambda d: (d / "seqattn.json").write_text("{"), "seqattn.json"),
        "other_format": (lambda d: (d / "seqattn.json").write_text('{"format": "x"}'), "seqattn.json"),
        "missing_key": (lambda d: (d / "seqattn.json").write_text('{"format": "seqattn-onnx", "version": 1}'),
                        "missing key 'rnn'"),
        "newer": (lambda d: (d / "seqattn.json").write_text(json.dumps({**meta, "version": VERSION + 1})),
                  f"it says .* version {VERSION + 1}"),
        "outputs": (lambda d: (d / "seqattn.json").write_text(json.dumps(
            {**meta, "encoder_outputs": [o for o in meta["encoder_outputs"] if o != "context"]})), "encoder.onnx"),
        "step_outputs": (lambda d: (d / "seqattn.json").write_text(json.dumps(
            {**meta, "step_outputs": meta["step_outputs"][:-1]})), "step.onnx: outputs"),
        "no_tokenizer": (lambda d: (d / "spm.model").unlink(), "spm.model"),
        "view": (lambda d: (d / "tgt_pieces.txt").write_text("0\n1\n2\n3\n999999\n"), "tgt_pieces.txt:5"),
        "vocab": (lambda d: (d / "tgt_pieces.txt").write_text("0\n1\n2\n3\n"), "target tokenizer has 4 pieces"),
    }
    for name, (edit, named) in cases.items():
        d = broken(name, edit)
        with pytest.raises(ExportError, match=named if name == "newer" else named.replace(".", r"\.")):
            Runtime(d)
        proc = subprocess.run([sys.executable, "-m", "seqattn_runtime.cli", "translate", str(d)], input="apple\n",
                              capture_output=True, text=True)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, (name, proc.stderr)
    missing = subprocess.run([sys.executable, "-m", "seqattn", "export", str(tmp_path / "nope"), "--out",
                              str(tmp_path / "o")], capture_output=True, text=True)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1


@ONE
def test_serve_with_the_onnx_runtime_answers_as_pytorch_does(exported):
    from fastapi.testclient import TestClient

    from seqattn.errors import SeqattnError
    from seqattn_runtime.serve.app import create_app
    from seqattn_runtime.serve.backend import RuntimeTranslator

    translator, _, pairs, tmp, meta = exported
    onnx_client = TestClient(create_app(RuntimeTranslator(tmp / "export")))
    torch_client = TestClient(create_app(translator))
    info = onnx_client.get("/info").json()
    assert info["runtime"] == "onnxruntime" and info["src_vocab"] == len(translator.tok.src)
    assert info["src_lang"] == translator.cfg.data.src_lang and torch_client.get("/info").json()["runtime"] == "pytorch"
    body = {"texts": [s for s, _ in pairs[:4]], "beam": 3, "nbest": 2, "attention": True}
    got, want = (c.post("/translate", json=body).json()["translations"] for c in (onnx_client, torch_client))
    assert [g["translation"] for g in got] == [w["translation"] for w in want]
    nbest = lambda items: [[n["translation"] for n in item["nbest"]] for item in items]
    assert nbest(got) == nbest(want)
    assert all(g["target_tokens"] == w["target_tokens"] for g, w in zip(got, want))
    with pytest.raises(SeqattnError, match="seqattn.json"):
        RuntimeTranslator(tmp / "model")                              # a model directory is not an export


@pytest.mark.parametrize("exported", ["lstm-dot", "gru-concat-feeding"], indirect=True)   # an LSTM, a GRU
def test_an_int8_export_is_smaller_quantized_and_translates_close_to_float(exported, tmp_path):
    translator, runtime, pairs, tmp, meta = exported
    import onnx

    q = export_model_dir(tmp / "model", tmp_path / "int8", quantize="int8")
    assert q["quantize"] == "int8" and meta["quantize"] is None and q["max_diff"] < 1.0
    ops = {n.op_type for n in onnx.load(str(tmp_path / "int8" / "step.onnx")).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeLSTM", "DynamicQuantizeLinear"}, ops
    shrink = 0.5 if meta["name"] == "lstm-dot" else 0.9   # ONNX Runtime quantizes LSTMs, not GRUs (their products)
    assert (tmp_path / "int8" / "step.onnx").stat().st_size < shrink * (tmp / "export" / "step.onnx").stat().st_size
    lines = [s for s, _ in pairs]
    close = Runtime(tmp_path / "int8").translate(lines, beam=3)
    same = sum(a.text == b.text for a, b in zip(close, runtime.translate(lines, beam=3)))
    assert same >= 0.8 * len(lines), same


@EVERY
def test_an_export_with_a_shortlist_decodes_over_it_as_pytorch_does(exported, tmp_path):
    """Every architecture: step_shortlist.onnx is the model's step over a shortlist; the runtime's searches
    over it (greedy, beam with n-best, prefixes) give PyTorch's outputs and scores, within the shortlist."""
    import shutil

    from seqattn.shortlist import build_shortlist

    _, _, pairs, tmp, meta = exported
    model = tmp_path / "model"
    shutil.copytree(tmp / "model", model)
    build_shortlist(model, k=2, frequent=0)                     # small: the shortlist leaves most pieces out
    short = export_model_dir(model, tmp_path / "export", shortlist=True)
    assert short["shortlist"] == "shortlist.npz" and short["max_diff"] < 1e-4
    translator, runtime = Translator.load(model, device="cpu"), Runtime(tmp_path / "export")
    lines = [s for s, _ in pairs[:12]] + [""]
    vocab = set(runtime.shortlist.vocab(runtime.src.encode(lines)).tolist())
    assert max(len(runtime.shortlist.vocab(runtime.src.encode(lines[i : i + 2]))) for i in range(0, 12, 2)) < \
        0.9 * len(runtime.tgt)                                  # a batch of two leaves pieces out
    prefixes = ["", pairs[1][1].split()[0]] + [""] * (len(lines) - 2)
    for beam, nbest, pre in ((1, 1, None), (3, 2, None), (3, 1, prefixes)):
        want = translator.translate_n(lines, batch_size=2, attention=True, prefixes=pre,
                                      options=SearchOptions(beam=beam, nbest=nbest, shortlist=True))
        got = runtime.translate_n(lines, beam, nbest, batch_size=2, attention=True, prefixes=pre, shortlist=True)
        for g_list, w_list in zip(got, want):
            for g, w in zip(g_list, w_list):
                _same(w, g)
                assert set(translator.tok.tgt.encode([g.text])[0]) <= vocab | set(
                    translator.tok.tgt.encode([pre[1]])[0] if pre else [])
    with pytest.raises(ValueError, match="no shortlist"):
        Runtime(tmp / "export").translate_n(lines, shortlist=True)
    if meta["name"] != "lstm-dot":
        return
    refused = subprocess.run([sys.executable, "-m", "seqattn_runtime.cli", "translate", str(tmp / "export"),
                              "--shortlist"], input="apple\n", capture_output=True, text=True)
    assert refused.returncode != 0 and refused.stderr.strip().endswith("`seqattn export --shortlist`)")
    assert len(refused.stderr.strip().splitlines()) == 1
    src = "".join(f"{s}\n" for s in lines[:8])
    got = subprocess.run([sys.executable, "-m", "seqattn_runtime.cli", "translate", str(tmp_path / "export"),
                          "--shortlist", "--beam", "3", "--batch-size", "2"], input=src, capture_output=True, text=True)
    want = subprocess.run([sys.executable, "-m", "seqattn", "translate", str(model), "--shortlist", "--beam", "3",
                           "--batch-size", "2"], input=src, capture_output=True, text=True)
    assert got.returncode == 0 and got.stdout == want.stdout and len(got.stdout.splitlines()) == 8, got.stderr
    none = subprocess.run([sys.executable, "-m", "seqattn", "export", str(tmp / "model"), "--out",
                           str(tmp_path / "o"), "--shortlist"], capture_output=True, text=True)
    assert none.returncode == 2 and "has no shortlist.npz" in none.stderr
    assert len(none.stderr.strip().splitlines()) == 1
    from fastapi.testclient import TestClient

    from seqattn_runtime.serve.app import create_app
    from seqattn_runtime.serve.backend import RuntimeTranslator

    served = TestClient(create_app(RuntimeTranslator(tmp_path / "export"))).post(
        "/translate", json={"texts": lines[:8], "beam": 3, "shortlist": True})
    assert [t["translation"] for t in served.json()["translations"]] == \
        [t.text for t in runtime.translate(lines[:8], beam=3, shortlist=True)]    # one batch of 8, one shortlist
    q = export_model_dir(model, tmp_path / "int8", quantize="int8", shortlist=True)   # int8 over a shortlist runs
    assert q["shortlist"] and len(Runtime(tmp_path / "int8").translate(lines, beam=3, shortlist=True)) == len(lines)
