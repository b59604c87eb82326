"""Corpus reading, tokenizers, token batching, padding."""

import gzip

import pytest
import torch

from seqattn.data.batching import collate, token_batches
from seqattn.data.corpus import read_lines, read_parallel, read_tsv
from seqattn.data.tokenizer import EOS, PAD, SOS, UNK, Tokenizer, Tokenizers
from seqattn.errors import SeqattnError


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
