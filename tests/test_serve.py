"""The HTTP API through FastAPI's test client: fields, limits, malformed bodies, dynamic batching."""

import asyncio

import httpx
import pytest
from conftest import reverse_pairs, write_tiny_config
from fastapi.testclient import TestClient

from seqattn.config import load_config
from seqattn.train import Trainer
from seqattn.translator import SearchOptions, Translator
from seqattn_runtime.serve.app import Limits, create_app


@pytest.fixture(scope="module")
def translator(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    pairs = reverse_pairs(40, seed=2)
    Trainer(load_config(write_tiny_config(tmp, pairs, train__max_steps=150, train__valid_every=50))).run()
    return Translator.load(tmp / "model"), pairs


@pytest.fixture()
def client(translator):
    t, _ = translator
    return TestClient(create_app(t, Limits(max_body_bytes=4000, max_chars=200, max_texts=5, max_beam=4)))


def test_health_info_docs_and_page(client):
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/info").json()
    assert info["model"]["attention"] == "dot" and info["src_lang"] == "src" and info["limits"]["max_beam"] == 4
    assert client.get("/openapi.json").json()["paths"]["/translate"]
    page = client.get("/")
    assert page.status_code == 200 and "seqattn" in page.text and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200


def test_translate_fields(client, translator):
    t, pairs = translator
    src = pairs[0][0]
    one = client.post("/translate", json={"text": src}).json()["translations"]
    assert one[0]["translation"] == t.translate([src])[0].text and "attention" not in one[0]
    many = client.post("/translate", json={"texts": [p[0] for p in pairs[:3]], "beam": 3, "nbest": 2,
                                           "alpha": 0.6, "attention": True}).json()["translations"]
    assert len(many) == 3
    for item, (s, _) in zip(many, pairs[:3]):
        assert len(item["nbest"]) == 2 and item["nbest"][0]["translation"] == item["translation"]
        assert item["translation"] == t.translate([s], options=SearchOptions(beam=3, nbest=2, alpha=0.6))[0].text
        assert item["nbest"][0]["score"] >= item["nbest"][1]["score"]
        assert len(item["attention"]) == len(item["target_tokens"])
        assert all(len(row) == len(item["source_tokens"]) for row in item["attention"])
    empty = client.post("/translate", json={"texts": ["", "   ", src], "beam": 3, "nbest": 2, "attention": True})
    assert empty.status_code == 200
    blank = {"translation": "", "score": 0.0, "nbest": [{"translation": "", "score": 0.0}],
             "source_tokens": [], "target_tokens": [], "attention": []}
    assert empty.json()["translations"][:2] == [blank, blank]          # not decoded: the empty output
    assert empty.json()["translations"][2]["translation"] == many[0]["translation"]
    assert client.post("/translate", json={"text": ""}).json() == {"translations": [{"translation": "", "score": 0.0}]}
    assert client.post("/translate", json={"texts": []}).json() == {"translations": []}


@pytest.mark.parametrize("body,status,limit", [
    ({"texts": ["a"] * 6}, 422, "max_texts"),
    ({"text": "a" * 201}, 422, "max_chars"),
    ({"text": "a", "beam": 5}, 422, "max_beam"),
    ({"text": "a", "beam": 2, "nbest": 3}, 422, "nbest <= beam"),
    ({"text": "a" * 5000}, 413, "max_body_bytes"),
])
def test_limits_answer_4xx_naming_the_limit(client, body, status, limit):
    resp = client.post("/translate", json=body)
    assert resp.status_code == status
    assert resp.json()["limit"] == limit


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'{"text": 5}', b'{"text": "a", "beam": 0}',
                                     b'{"text": "a", "texts": ["b"]}', b"{}", b'{"text": "a", "extra": 1}'])
def test_malformed_bodies_are_422(client, content):
    resp = client.post("/translate", content=content, headers={"Content-Type": "application/json"})
    assert resp.status_code == 422
    assert "error" in resp.json()


def test_chunked_body_over_the_limit_is_413(client):
    def chunks():
        yield b'{"text": "'
        for _ in range(10):
            yield b"a" * 1000
        yield b'"}'

    resp = client.post("/translate", content=chunks(), headers={"Content-Type": "application/json"})
    assert resp.status_code == 413 and resp.json()["limit"] == "max_body_bytes"


def test_concurrent_requests_are_batched(translator):
    t, pairs = translator
    app = create_app(t, Limits(max_wait_ms=50, max_batch=64))

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            resps = await asyncio.gather(*(c.post("/translate", json={"text": p[0]}) for p in pairs[:12]))
        return [r.json()["translations"][0]["translation"] for r in resps]

    got = asyncio.run(main())
    assert got == [r.text for r in t.translate([p[0] for p in pairs[:12]])]
    assert 1 <= app.state.batcher.model_calls < 12


def test_chunked_body_under_the_limit_is_served(client, translator):
    t, pairs = translator

    def chunks():
        yield b'{"text": "'
        yield pairs[0][0].encode()
        yield b'"}'

    resp = client.post("/translate", content=chunks(), headers={"Content-Type": "application/json"})
    assert resp.status_code == 200
    assert resp.json()["translations"][0]["translation"] == t.translate([pairs[0][0]])[0].text
