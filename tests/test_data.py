"""Corpus reading, tokenizers, token batching, padding."""

import gzip

import pytest
import torch

from seqattn.data.batching import collate, token_batches
from seqattn.data.corpus import read_lines, read_parallel, read_tsv
from seqattn.data.tokenizer import EOS, PAD, SOS, UNK, TargetView, Tokenizer, Tokenizers
from seqattn.errors import SeqattnError
from seqattn_runtime.translator import BATCH_ENCODE, encode_lines


def test_read_txt_gz_crlf_bom(tmp_path):
    (tmp_path / "a.txt").write_bytes("\ufeffeins\r\nzwei\r\n\r\ndrei".encode())
    assert read_lines(tmp_path / "a.txt") == ["eins", "zwei", "", "drei"]
    with gzip.open(tmp_path / "b.gz", "wt", encoding="utf-8") as f:
        f.write("ä\nö\n")
    assert read_lines(tmp_path / "b.gz") == ["ä", "ö"]


def test_read_errors_name_file_and_line(tmp_path):
    with pytest.raises(SeqattnError, match="file not found"):
        read_lines(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(SeqattnError, match="empty.txt: file is empty"):
        read_lines(tmp_path / "empty.txt")
    (tmp_path / "bad.txt").write_bytes(b"ok\nstill ok\nbad \xff here\n")
    with pytest.raises(SeqattnError, match=r"bad.txt:3: invalid UTF-8 \(byte 0xff at column 5\)"):
        read_lines(tmp_path / "bad.txt")
    (tmp_path / "trunc.gz").write_bytes(gzip.compress(b"x\n" * 1000)[:-20])
    with pytest.raises(SeqattnError, match="trunc.gz: corrupt or truncated gzip"):
        read_lines(tmp_path / "trunc.gz")


def test_parallel_and_tsv(tmp_path):
    (tmp_path / "s").write_text("a\nb\n")
    (tmp_path / "t").write_text("x\n")
    with pytest.raises(SeqattnError, match=r"line counts differ: .*s has 2 lines, .*t has 1 lines"):
        read_parallel(tmp_path / "s", tmp_path / "t")
    (tmp_path / "d.tsv").write_text("a\tx\nb\ty\tz\n")
    with pytest.raises(SeqattnError, match=r"d.tsv:2: expected 2 tab-separated columns, found 3"):
        read_tsv(tmp_path / "d.tsv")


def test_tokenizer_specials_round_trip_and_save(tmp_path):
    lines = ["Ein Hund läuft.", "A dog runs.", "2007년 7월 10일", "Zwei Katzen schlafen."] * 5
    toks = Tokenizers.train(lines, lines, vocab_size=60, joint=True)
    assert toks.joint
    sp = toks.src
    assert [sp.sp.IdToPiece(i) for i in (PAD, UNK, SOS, EOS)] == ["<pad>", "<unk>", "<sos>", "<eos>"]
    ids = sp.encode(["2007년 7월 10일"])[0]
    assert sp.decode(ids) == "2007년 7월 10일"
    assert "0" in sp.pieces(ids) and "1" in sp.pieces(ids)  # digits are split
    assert all(i > EOS for i in ids)
    toks.save(tmp_path)
    again = Tokenizers.load(tmp_path)
    assert again.src.encode(["A dog runs."]) == sp.encode(["A dog runs."])
    assert (tmp_path / "spm.vocab").read_text(encoding="utf-8").startswith("<pad>")
    separate = Tokenizers.train(lines, [x.upper() for x in lines], vocab_size=60, joint=False)
    (tmp_path / "x").mkdir()
    separate.save(tmp_path / "x")
    assert (tmp_path / "x" / "src.model").exists() and (tmp_path / "x" / "tgt.model").exists()
    assert not Tokenizers.load(tmp_path / "x").joint


def test_target_view_covers_only_target_pieces(tmp_path):
    src = ["ein hund läuft schnell", "zwei katzen schlafen", "der vogel singt"] * 10
    tgt = ["a dog runs fast", "two cats sleep", "the bird sings"] * 10
    toks = Tokenizers.train(src, tgt, vocab_size=60, joint=True)
    view, base = toks.tgt, toks.src
    assert isinstance(view, TargetView) and toks.joint
    used = set().union(*base.encode(tgt))
    assert len(view) == len(used | {PAD, UNK, SOS, EOS}) < len(base)       # German-only pieces are left out
    assert view.pieces([PAD, UNK, SOS, EOS]) == ["<pad>", "<unk>", "<sos>", "<eos>"]
    ids = view.encode(["two cats sleep"])[0]
    assert max(ids) < len(view) and view.decode(ids) == "two cats sleep"
    assert view.pieces(ids) == base.pieces(base.encode(["two cats sleep"])[0])
    assert UNK in view.encode(["läuft"])[0]                               # ä: a source-only piece
    toks.save(tmp_path)
    again = Tokenizers.load(tmp_path)
    assert again.tgt.keep == view.keep and again.tgt.encode(tgt[:3]) == view.encode(tgt[:3])
    (tmp_path / "tgt_pieces.txt").unlink()                                 # a model from before the view
    assert len(Tokenizers.load(tmp_path).tgt) == len(base)


def test_target_view_file_errors_name_the_line(tmp_path):
    base = Tokenizer.train(["abc abc", "cab bca"] * 10, vocab_size=20)
    (tmp_path / "v.txt").write_text("0\t<pad>\n1\t<unk>\n2\t<sos>\n3\t<eos>\n9\tx\n5\ty\n")
    with pytest.raises(SeqattnError, match=r"v.txt:6: expected increasing piece ids"):
        TargetView.load(base, tmp_path / "v.txt")
    (tmp_path / "v.txt").write_text("0\t<pad>\n1\t<unk>\n2\t<sos>\n3\t<eos>\n9999\tx\n")
    with pytest.raises(SeqattnError, match=r"v.txt:5: .* below"):
        TargetView.load(base, tmp_path / "v.txt")


def test_adopt_renumbers_an_existing_sentencepiece_model(tmp_path):
    import sentencepiece as spm

    lines = ["ein hund läuft schnell", "a dog runs fast", "zwei katzen", "two cats"] * 20
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=str(tmp_path / "own"),
                                   vocab_size=25, minloglevel=2)   # sentencepiece's own ids: unk 0, <s> 1, </s> 2
    own = spm.SentencePieceProcessor(model_file=str(tmp_path / "own.model"))
    tok = Tokenizer.adopt(tmp_path / "own.model")
    assert tok.pieces([PAD, UNK, SOS, EOS]) == ["<pad>", "<unk>", "<sos>", "<eos>"]
    assert len(tok) == own.GetPieceSize() + 1                    # the same pieces plus <pad>
    text = ["zwei hunde laufen", "two dogs run"]
    assert [tok.pieces(ids) for ids in tok.encode(text)] == own.Encode(text, out_type=str)
    assert tok.decode(tok.encode(text)[0]) == text[0]
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(SeqattnError, match="junk.model: not a valid SentencePiece model"):
        Tokenizer.adopt(tmp_path / "junk.model")


def test_short_and_long_lists_encode_alike():
    """Short lists go line by line, long ones through SentencePiece's batch call: the same ids either way."""
    lines = ["Ein Hund läuft.", "A dog runs.", "2007년 7월 10일", "Zwei Katzen schlafen.", ""] * 5
    tok = Tokenizer.train(lines, vocab_size=60)
    many = [f"{line} {i}" for i, line in enumerate(lines * (BATCH_ENCODE // len(lines) + 1))]
    assert len(many) >= BATCH_ENCODE > len(lines)
    for batch in (lines, many, lines[:1], []):
        assert tok.encode(batch) == [tok.sp.Encode(line) for line in batch]
    assert encode_lines(tok.sp, many) == tok.sp.Encode(many)


def test_unknown_characters_map_to_unk():
    tok = Tokenizer.train(["abc abc", "cab bca"] * 10, vocab_size=20)
    assert UNK in tok.encode(["abz"])[0]


def test_token_batches_bound_padding_and_cover_everything():
    import random

    rng = random.Random(0)
    src = [rng.randint(1, 40) for _ in range(500)]
    tgt = [rng.randint(1, 40) for _ in range(500)]
    batches = token_batches(src, tgt, 300)
    assert sorted(i for b in batches for i in b) == list(range(500))
    for b in batches:
        assert len(b) * (max(tgt[i] for i in b) + 1) <= 300
    # similar lengths: the spread of target lengths inside a batch is small
    assert sum(max(tgt[i] for i in b) - min(tgt[i] for i in b) for b in batches) / len(batches) <= 2


def test_collate_teacher_forcing_shift():
    batch = collate([[5, 6], [7]], [[8, 9, 10], [11]])
    assert batch.src.tolist() == [[5, 6, EOS], [7, EOS, PAD]]
    assert batch.src_len.tolist() == [3, 2]
    assert batch.tgt_in.tolist() == [[SOS, 8, 9, 10], [SOS, 11, PAD, PAD]]
    assert batch.tgt_out.tolist() == [[8, 9, 10, EOS], [11, EOS, PAD, PAD]]
    assert batch.n_tokens == 6
    assert batch.src.dtype == torch.long


@pytest.mark.parametrize("seed", [1, 2, 3, 1234])
def test_held_out_qa_questions_ask_trained_facts_in_new_forms(seed):
    """The qa demo's held-out questions never occur in training, but each asks, in another of the eight
    forms, a fact training asks too: what the demo tests is reading a question, not inventing arithmetic."""
    import re

    from seqattn.data.tasks import QUESTION_FORMS, make_splits, number_words

    words = {number_words(n): n for n in range(21)}
    pattern = r"(?:what is the result of|what is|how much is|what do you get for|compute|tell me)? ?(.+?) " \
              r"(plus|minus|times) (.+?)(?: is what| equals)? [?.]$"

    def fact(question):
        x, op, y = re.fullmatch(pattern, question).groups()
        return words[x], op, words[y]

    splits = make_splits("qa", seed, n_train=20000, n_valid=300, n_test=1000)
    train_questions = {q for q, _ in splits["train"]}
    train_facts = {fact(q) for q in train_questions}
    for q, answer in splits["valid"] + splits["test"]:
        a, op, b = fact(q)
        assert int(answer) == {"plus": a + b, "minus": a - b, "times": a * b}[op] and answer == str(int(answer))
        assert q not in train_questions and (a, op, b) in train_facts
    forms = {re.sub(r"\b(" + "|".join(words) + r")\b", "N", q) for q, _ in splits["test"]}
    assert len({re.sub(r"plus|minus|times", "OP", f) for f in forms}) == len(QUESTION_FORMS)


def test_the_lookup_task_maps_every_letter_in_order():
    import random

    from seqattn.data.tasks import LOOKUP, lookup

    pairs = lookup(300, random.Random(0))
    assert {len(s.split()) for s, _ in pairs} <= set(range(5, 101)) and max(len(s.split()) for s, _ in pairs) > 90
    for src, tgt in pairs:
        assert tgt.split() == [LOOKUP[c] for c in src.split()]
