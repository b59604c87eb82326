"""The FastAPI app: POST /translate, GET /health, GET /info, and the attention page at GET /, over either
backend: seqattn's `Translator` (PyTorch) or `RuntimeTranslator` (an export, ONNX Runtime). Torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from ..align import pharaoh
from ..errors import SeqattnError
from ..options import SearchOptions
from ..rules import STOPPING
from .batcher import Batcher

STATIC = Path(__file__).parent / "static"


@dataclass
class Limits:
    """What one request may ask for; over a limit is a 413 (body) or 422 (fields) naming the limit."""

    max_body_bytes: int = 1 << 20
    max_chars: int = 2000
    max_texts: int = 64
    max_beam: int = 10
    max_batch: int = 32
    max_wait_ms: float = 5.0


class TranslateRequest(BaseModel):
    """POST /translate body: one text or a list of texts, and how to decode them."""

    text: str | None = None
    texts: list[str] | None = None
    beam: int = Field(1, ge=1)
    nbest: int = Field(1, ge=1)
    alpha: float = Field(1.0, ge=0.0, le=5.0)
    coverage_penalty: float = Field(0.0, ge=0.0, le=5.0)   # GNMT's beta, beam search only
    stopping: Literal[STOPPING] | None = None   # beam search's stopping rule; None: the model's
    patience: float | None = Field(None, gt=0.0, le=100.0)  # with stopping 'patience'
    shortlist: bool = False                 # score only the batch's shortlist (the model's shortlist.npz)
    attention: bool = False
    prefix: str | None = None               # with text: the output starts with it (forced)
    prefixes: list[str] | None = None       # with texts: one per text ("" for none)
    align: bool = False                     # each translation's word alignment (Pharaoh i-j) from its attention
    alternatives: int = Field(0, ge=0, le=10)   # the k likeliest pieces at each position of each translation

    model_config = {"extra": "forbid"}


class BodyTooLarge(HTTPException):
    """Raised while reading a body past the limit (an HTTPException, so FastAPI passes it through)."""

    def __init__(self):
        super().__init__(status_code=413)


class BodyLimit:
    """ASGI middleware: refuse a declared Content-Length over max_bytes at once, and stop reading a
    streamed (chunked) body as soon as it passes max_bytes, so no request is held in memory whole."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            response = _error(413, f"request body over {self.max_bytes} bytes", "max_body_bytes")
            return await response(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge()
            return message

        await self.app(scope, limited_receive, send)


def _error(status: int, message: str, limit: str | None = None) -> JSONResponse:
    body = {"error": message}
    if limit:
        body["limit"] = limit
    return JSONResponse(status_code=status, content=body)


def create_app(translator, limits: Limits | None = None) -> FastAPI:
    """Return the app serving translator (loaded once) within limits: a `seqattn.translator.Translator`, or
    anything with its translate_n(texts, attention, options, prefixes), info(), stopping and shortlist
    (`RuntimeTranslator`: an export)."""
    limits = limits or Limits()
    app = FastAPI(title="seqattn", description="Recurrent seq2seq with Luong attention: translate and see "
                                               "where the model looked.")

    def decode(texts: list[str], options: SearchOptions, attention: bool, prefixes: list[str] | None):
        return translator.translate_n(texts, attention=attention, options=options, prefixes=prefixes)

    batcher = Batcher(decode, max_batch=limits.max_batch, max_wait_s=limits.max_wait_ms / 1000)
    app.state.batcher = batcher

    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, exc: BodyTooLarge):
        return _error(413, f"request body over {limits.max_body_bytes} bytes", "max_body_bytes")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return _error(422, f"invalid request: {where + ': ' if where else ''}{first.get('msg', 'malformed body')}")

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/info")
    async def info():
        return {**translator.info(), "limits": vars(limits)}

    @app.post("/translate")
    async def translate(req: TranslateRequest):
        if (req.text is None) == (req.texts is None):
            return _error(422, "give exactly one of 'text' or 'texts'")
        texts = [req.text] if req.text is not None else req.texts
        if len(texts) > limits.max_texts:
            return _error(422, f"{len(texts)} texts, at most {limits.max_texts} per request", "max_texts")
        longest = max((len(t) for t in texts), default=0)
        if longest > limits.max_chars:
            return _error(422, f"a text has {longest} characters, at most {limits.max_chars}", "max_chars")
        if req.beam > limits.max_beam:
            return _error(422, f"beam {req.beam}, at most {limits.max_beam}", "max_beam")
        if req.nbest > req.beam:
            return _error(422, f"nbest {req.nbest} is larger than beam {req.beam}", "nbest <= beam")
        if (req.prefix is not None and req.text is None) or (req.prefixes is not None and req.texts is None):
            return _error(422, "'prefix' goes with 'text', 'prefixes' with 'texts'")
        prefixes = [req.prefix] if req.prefix is not None else req.prefixes
        if prefixes is not None and len(prefixes) != len(texts):
            return _error(422, f"{len(prefixes)} prefixes for {len(texts)} texts (one per text, '' for none)")
        if prefixes is not None and max(len(p) for p in prefixes) > limits.max_chars:
            return _error(422, f"a prefix has over {limits.max_chars} characters", "max_chars")
        if not texts:
            return {"translations": []}
        if req.coverage_penalty and req.beam == 1:
            return _error(422, "coverage_penalty needs beam > 1")
        options = SearchOptions(beam=req.beam, nbest=req.nbest, alpha=req.alpha, coverage_penalty=req.coverage_penalty,
                                alternatives=req.alternatives, stopping=req.stopping, patience=req.patience,
                                shortlist=req.shortlist)
        try:
            options.stopping_rule(translator.stopping)
        except SeqattnError as e:
            return _error(422, str(e).lstrip("-"))
        if req.shortlist and translator.shortlist is None:
            return _error(422, "shortlist: this model has no shortlist (build one with `seqattn shortlist MODEL_DIR`; "
                          "an export: `seqattn export --shortlist`)")
        results = await batcher.submit(texts, options, req.attention or req.align, prefixes)
        out = []
        for outs in results:
            best = outs[0]
            item = {"translation": best.text, "score": best.score}
            if req.align:
                item["alignment"] = pharaoh(best.src_tokens, best.tgt_tokens, best.attention)
            if req.alternatives:
                item["alternatives"] = [[{"token": t, "p": p} for t, p in pos] for pos in best.alternatives]
            if req.nbest > 1:
                item["nbest"] = [{"translation": o.text, "score": o.score} for o in outs]
            if req.attention:
                item.update(source_tokens=best.src_tokens, target_tokens=best.tgt_tokens, attention=best.attention)
            if best.truncated:
                item["truncated"] = True
            out.append(item)
        return {"translations": out}

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
