"""HTTP API and attention page, one app over either backend: a PyTorch model (`seqattn serve`) or an export
(`seqattn-runtime serve`, no PyTorch). Needs FastAPI and uvicorn (`pip install ./seqattn_runtime[serve]`);
this module itself imports neither until it serves."""

from __future__ import annotations

import argparse
import sys

LOCAL = ("127.0.0.1", "localhost", "::1")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare the serving options both commands share: address, port and the request limits (`app.Limits`)."""
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-body-bytes", type=int, default=1 << 20)
    p.add_argument("--max-chars", type=int, default=2000, help="characters per text")
    p.add_argument("--max-texts", type=int, default=64, help="texts per request")
    p.add_argument("--max-beam", type=int, default=10)
    p.add_argument("--max-batch", type=int, default=32, help="texts decoded together (dynamic batching)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch waits for more requests")


def serve(translator, args: argparse.Namespace, prog: str) -> None:
    """Serve translator with the options of `add_arguments` until interrupted; warn (as prog) when the
    address is reachable from other machines."""
    import uvicorn

    from .app import Limits, create_app

    if args.host not in LOCAL:
        print(f"{prog}: warning: listening on {args.host}: reachable from other machines, with no authentication",
              file=sys.stderr)
    limits = Limits(max_body_bytes=args.max_body_bytes, max_chars=args.max_chars, max_texts=args.max_texts,
                    max_beam=args.max_beam, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms)
    uvicorn.run(create_app(translator, limits), host=args.host, port=args.port, log_level="warning")
