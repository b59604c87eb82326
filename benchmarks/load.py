"""Loopback load test of `seqattn serve` (opt-in, not in CI): throughput and latency, batching on and off.

Bounded: a fixed number of concurrent clients each send a fixed number of requests to 127.0.0.1 only,
with an overall time limit; the server is started and stopped by this script.

usage: python benchmarks/load.py MODEL_DIR [--clients 16] [--requests 25] [--src FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def client(base: str, texts: list[str], n: int, offset: int, lat: list[float], errors: list[str]) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=60) as c:
        for i in range(n):
            start = time.perf_counter()
            try:
                r = await c.post("/translate", json={"text": texts[(offset + i) % len(texts)]})
                if r.status_code != 200:
                    errors.append(str(r.status_code))
            except httpx.HTTPError as e:
                errors.append(type(e).__name__)
            lat.append(time.perf_counter() - start)


def run_once(model_dir: str, texts: list[str], clients: int, requests: int, batching: bool) -> dict:
    port = free_port()
    extra = [] if batching else ["--max-batch", "1", "--max-wait-ms", "0"]
    server = subprocess.Popen([sys.executable, "-m", "seqattn", "serve", model_dir, "--host", "127.0.0.1",
                               "--port", str(port), "--device", "cpu", *extra], cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("server did not start")
            time.sleep(0.2)
        lat: list[float] = []
        errors: list[str] = []

        async def all_clients():
            await asyncio.wait_for(asyncio.gather(*(client(base, texts, requests, k * requests, lat, errors)
                                                    for k in range(clients))), timeout=600)

        start = time.perf_counter()
        asyncio.run(all_clients())
        wall = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=30)
    q = statistics.quantiles(lat, n=100)
    return {"batching": batching, "requests": len(lat), "errors": len(errors), "seconds": wall,
            "req_per_s": len(lat) / wall, "p50_ms": 1000 * q[49], "p99_ms": 1000 * q[98]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=25, help="requests per client")
    ap.add_argument("--src", default=str(ROOT.parent / "shared" / "data" / "multi30k" / "test_2016_flickr.de.gz"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from seqattn.data.corpus import read_lines

    texts = read_lines(args.src)
    print(f"| dynamic batching | requests | errors | req/s | p50 ms | p99 ms |  ({args.clients} clients, "
          f"127.0.0.1)")
    print("|---|---|---|---|---|---|")
    for batching in (True, False):
        r = run_once(args.model_dir, texts, args.clients, args.requests, batching)
        print(f"| {'on' if batching else 'off'} | {r['requests']} | {r['errors']} | {r['req_per_s']:.1f} | "
              f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
