"""Property-based tests (Hypothesis): hostile input gives a result or one clean error, never a crash.

Each `check_*` returns "ok" or "error" (a clean SeqattnError / 4xx) and fails the test on anything
else; benchmarks/fuzz.py runs the same checks 1,000 times each and counts the outcomes.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path

import pytest
import yaml
from conftest import reverse_pairs, write_tiny_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqattn.config import load_config
from seqattn.data.corpus import read_lines, read_tsv
from seqattn.data.tokenizer import Tokenizer
from seqattn.errors import SeqattnError

SETTINGS = settings(max_examples=int(os.environ.get("SEQATTN_FUZZ_EXAMPLES", "60")), deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
TMP = Path(tempfile.mkdtemp(prefix="seqattn-fuzz-"))


def _one_line(e: SeqattnError) -> str:
    message = str(e)
    assert message and "\n" not in message and "Traceback" not in message, message
    return "error"


# -- config ------------------------------------------------------------------------------------------------
KEYS = ["model_dir", "data", "model", "train", "train_tsv", "vocab_size", "rnn", "attention", "lr", "max_len",
        "emb_size", "dropout", "batch_tokens", "schedule", "max_steps", "valid_metric", "bogus", "spm_model"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=20), st.sampled_from(["lstm", "gru", "dot", "none", "plateau", "bleu"]))
config_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)), max_leaves=15)
config_texts = st.one_of(
    st.builds(lambda v: yaml.safe_dump(v), config_values),
    st.text(max_size=300),
    st.builds(lambda d: yaml.safe_dump({"data": {"train_tsv": "t.tsv"}, **d}),
              st.dictionaries(st.sampled_from(["data", "model", "train"]),
                              st.dictionaries(st.sampled_from(KEYS), scalars, max_size=4), max_size=3)))


def check_config(text: str) -> str:
    path = TMP / "config.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))   # lone surrogates become invalid UTF-8
    try:
        load_config(path)
    except SeqattnError as e:
        return _one_line(e)
    return "ok"


@SETTINGS
@given(config_texts)
def test_config_loader_never_crashes(text):
    check_config(text)


# -- corpus reader -----------------------------------------------------------------------------------------
pieces = st.sampled_from([b"\xef\xbb\xbf", b"\r\n", b"\n", b"\x00", b"\t", b"\xff", b"\xc3", b"a", b"\xc3\xa4",
                          b"\xe2\x82\xac", b"x" * 5000, b"", b" ", b"\x1f\x8b"])
corpus_bytes = st.one_of(st.binary(max_size=400), st.lists(pieces, max_size=40).map(b"".join))


def check_corpus(raw: bytes, compressed: bool = False) -> str:
    path = TMP / ("corpus.gz" if compressed else "corpus.txt")
    path.write_bytes(gzip.compress(raw) if compressed else raw)
    try:
        lines = read_lines(path)
        assert all(isinstance(x, str) and "\n" not in x for x in lines)
        read_tsv(path)
    except SeqattnError as e:
        return _one_line(e)
    return "ok"


@SETTINGS
@given(corpus_bytes, st.booleans())
def test_corpus_reader_never_crashes(raw, compressed):
    check_corpus(raw, compressed)


# -- tokenizer ---------------------------------------------------------------------------------------------
WORDS = ["abc", "def", "ghij", "한국어", "의", "설명", "Äpfel", "über", "0123", "45.6,789"]
ALPHABET = "".join(sorted(set("".join(WORDS)))) + " "        # every character the tokenizer saw
_tok: list[Tokenizer] = []


def tokenizer() -> Tokenizer:
    if not _tok:
        words = WORDS
        lines = [" ".join(words[(i * 7 + j) % len(words)] for j in range(i % 5 + 1)) for i in range(200)]
        _tok.append(Tokenizer.train(lines, 60))
    return _tok[0]


def check_tokenizer(text: str) -> str:
    tok = tokenizer()
    ids = tok.encode([text])[0]
    assert all(0 <= i < len(tok) for i in ids)
    clean = " ".join(text.split())                       # SentencePiece collapses runs of whitespace
    if all(c in ALPHABET for c in text):
        assert tok.decode(ids) == clean, (text, tok.pieces(ids))
    else:
        assert isinstance(tok.decode(ids), str)
    return "ok"


@SETTINGS
@given(st.one_of(st.text(alphabet=ALPHABET, max_size=60), st.text(max_size=60)))
def test_tokenizer_round_trip(text):
    check_tokenizer(text)


# -- HTTP bodies -------------------------------------------------------------------------------------------
_client: list = []


def client():
    if not _client:
        from fastapi.testclient import TestClient

        from seqattn.train import Trainer
        from seqattn.translator import Translator
        from seqattn_runtime.serve.app import Limits, create_app

        tmp = TMP / "serve"
        tmp.mkdir(exist_ok=True)
        Trainer(load_config(write_tiny_config(tmp, reverse_pairs(30, seed=4), train__max_steps=30,
                                              train__valid_every=30)), overwrite=True).run()
        app = create_app(Translator.load(tmp / "model", device="cpu"),
                         Limits(max_body_bytes=3000, max_chars=100, max_texts=4, max_beam=3))
        _client.append(TestClient(app, raise_server_exceptions=False))
    return _client[0]


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False), st.text(max_size=30)),
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(
        st.sampled_from(["text", "texts", "beam", "nbest", "alpha", "attention", "sample", "temperature",
                         "top_k", "top_p", "seed", "x"]), inner, max_size=6)), max_leaves=12)
bodies = st.one_of(json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=200),
                   st.builds(lambda t, b: json.dumps({"text": t, "beam": b}).encode(), st.text(max_size=150),
                             st.integers(-3, 6)))


def check_http(body: bytes) -> str:
    r = client().post("/translate", content=body, headers={"content-type": "application/json"})
    assert r.status_code in (200, 400, 413, 422), (r.status_code, body, r.text)
    r.json()
    return "ok" if r.status_code == 200 else "error"


@SETTINGS
@given(bodies)
def test_http_bodies_get_200_or_4xx(body):
    check_http(body)


CHECKS = {"config": (config_texts, check_config),
          "corpus": (st.tuples(corpus_bytes, st.booleans()), lambda v: check_corpus(*v)),
          "tokenizer": (st.one_of(st.text(alphabet=ALPHABET, max_size=60), st.text(max_size=60)), check_tokenizer),
          "http": (bodies, check_http)}


@pytest.mark.parametrize("text", ["", "null", "- 1\n- 2", "data: [", "model: {rnn: transformer}", "\t\x00"])
def test_config_examples_end_in_one_line(text):
    assert check_config(text) == "error"
