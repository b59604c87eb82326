"""Loopback load test of `seqattn serve` (opt-in, not in CI): throughput and latency, batching on and off;
with --export, `seqattn-runtime serve` of the model's export beside it.

Bounded: a fixed number of concurrent clients each send a fixed number of requests to 127.0.0.1 only,
with an overall time limit; the server is started and stopped by this script.

usage: python benchmarks/load.py MODEL_DIR [--clients 16] [--requests 25] [--src FILE] [--soak]
                                 [--export EXPORT_DIR [--runtime-bin PATH/seqattn-runtime]]

--export: also serve EXPORT_DIR (`seqattn export MODEL_DIR`) with `seqattn-runtime serve`, started from
--runtime-bin (e.g. the `seqattn-runtime` of a virtual environment made by `pip install
'./seqattn_runtime[serve]'`, without torch), the two servers one after the other with the same clients;
each server's peak RSS is sampled once a second. Also printed: each server's start-up to its first
answer (process start to the first /translate answer, median of --startups runs) and, with --export, the
installed size of --runtime-bin's environment.

--soak: one bounded run with hostile traffic mixed in: of each client's requests about 1 in 10 is an
oversize body (1.5 MiB), 1 in 10 malformed JSON, 1 in 10 a slow client trickling a valid body over
about a second. Valid requests must all succeed, every bad one must get a 4xx, and the server's RSS is
sampled once a second: it must stay flat (growth after warm-up is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
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


def start_server(model_dir: str, extra: list[str], runtime_bin: str | None = None,
                 poll: float = 0.2) -> tuple[subprocess.Popen, str]:
    """Start `seqattn serve MODEL_DIR` (or with runtime_bin, `seqattn-runtime serve EXPORT_DIR`) on a free
    loopback port; return (process, base URL) once it answers."""
    port = free_port()
    command = [sys.executable, "-m", "seqattn", "serve", model_dir, "--device", "cpu"] if runtime_bin is None \
        else [runtime_bin, "serve", model_dir]
    server = subprocess.Popen([*command, "--host", "127.0.0.1", "--port", str(port), *extra],
                              cwd=ROOT if runtime_bin is None else "/")
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return server, base
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            server.kill()
            raise SystemExit("server did not start")
        time.sleep(poll)


def first_answer(model_dir: str, runtime_bin: str | None, texts: list[str]) -> float:
    """Return the seconds from starting the server to its first /translate answer."""
    start = time.perf_counter()
    server, base = start_server(model_dir, [], runtime_bin, poll=0.02)
    try:
        httpx.post(base + "/translate", json={"text": texts[0]}, timeout=60).raise_for_status()
        return time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=30)


def timed_run(server: subprocess.Popen, clients) -> float:
    """Run the clients coroutine to the end; stop the server whatever happens; return the seconds."""
    try:
        start = time.perf_counter()
        asyncio.run(clients)
        return time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=30)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def hostile_client(base: str, texts: list[str], n: int, offset: int, seen: dict, lat: list[float]) -> None:
    """Send n requests, 7 in 10 valid, the rest oversize, malformed or slow; count what came back."""
    async with httpx.AsyncClient(base_url=base, timeout=120) as c:
        for i in range(n):
            kind = ("valid", "valid", "valid", "oversize", "valid", "malformed", "valid", "slow", "valid",
                    "valid")[(offset + i) % 10]
            text = texts[(offset + i) % len(texts)]
            start = time.perf_counter()
            try:
                if kind == "oversize":
                    r = await c.post("/translate", json={"text": "x" * (3 << 19)})
                elif kind == "malformed":
                    r = await c.post("/translate", content=b'{"text": "unterminated',
                                     headers={"content-type": "application/json"})
                elif kind == "slow":
                    body = json.dumps({"text": text}).encode()

                    async def trickle(data=body):
                        for k in range(0, len(data), max(1, len(data) // 8)):
                            yield data[k : k + max(1, len(data) // 8)]
                            await asyncio.sleep(0.12)

                    r = await c.post("/translate", content=trickle(), headers={"content-type": "application/json"})
                else:
                    r = await c.post("/translate", json={"text": text})
                ok = (r.status_code == 200) if kind in ("valid", "slow") else (400 <= r.status_code < 500)
            except httpx.HTTPError:
                ok = False
            seen[(kind, ok)] = seen.get((kind, ok), 0) + 1
            if kind == "valid":
                lat.append(time.perf_counter() - start)


def soak(model_dir: str, texts: list[str], clients: int, requests: int) -> dict:
    server, base = start_server(model_dir, [])
    samples: list[float] = []
    seen: dict = {}
    lat: list[float] = []

    async def run_all():
        async def sampler():
            while True:
                samples.append(rss_mb(server.pid))
                await asyncio.sleep(1.0)

        watch = asyncio.create_task(sampler())
        await asyncio.wait_for(asyncio.gather(*(hostile_client(base, texts, requests, k * requests, seen, lat)
                                                for k in range(clients))), timeout=900)
        watch.cancel()

    wall = timed_run(server, run_all())
    warm = samples[min(len(samples) - 1, max(1, len(samples) // 5))]   # after the first fifth
    return {"seen": seen, "seconds": wall, "rss_start_mb": samples[0], "rss_warm_mb": warm,
            "rss_max_after_warm_mb": max(samples[samples.index(warm):]), "rss_end_mb": samples[-1],
            "p50_ms": 1000 * statistics.median(lat)}


def run_once(model_dir: str, texts: list[str], clients: int, requests: int, batching: bool,
             runtime_bin: str | None = None) -> dict:
    extra = [] if batching else ["--max-batch", "1", "--max-wait-ms", "0"]
    server, base = start_server(model_dir, extra, runtime_bin)
    lat: list[float] = []
    errors: list[str] = []
    samples = [rss_mb(server.pid)]

    async def all_clients():
        async def sampler():
            while True:
                samples.append(rss_mb(server.pid))
                await asyncio.sleep(1.0)

        watch = asyncio.create_task(sampler())
        await asyncio.wait_for(asyncio.gather(*(client(base, texts, requests, k * requests, lat, errors)
                                                for k in range(clients))), timeout=600)
        watch.cancel()

    wall = timed_run(server, all_clients())
    q = statistics.quantiles(lat, n=100)
    return {"server": "seqattn serve" if runtime_bin is None else "seqattn-runtime serve", "batching": batching,
            "requests": len(lat), "errors": len(errors), "seconds": wall, "req_per_s": len(lat) / wall,
            "p50_ms": 1000 * q[49], "p99_ms": 1000 * q[98], "peak_rss_mb": max(samples)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=25, help="requests per client")
    ap.add_argument("--soak", action="store_true", help="hostile traffic mixed in; memory sampled")
    ap.add_argument("--src", default=str(ROOT.parent / "shared" / "data" / "multi30k" / "test_2016_flickr.de.gz"))
    ap.add_argument("--export", help="also load-test `seqattn-runtime serve EXPORT` (an export of MODEL_DIR)")
    ap.add_argument("--runtime-bin", default=str(Path(sys.executable).parent / "seqattn-runtime"),
                    help="the seqattn-runtime command to start it with")
    ap.add_argument("--startups", type=int, default=3, help="start-ups to the first answer per server (median)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from seqattn.data.corpus import read_lines

    texts = read_lines(args.src)
    if args.soak:
        r = soak(args.model_dir, texts, args.clients, args.requests)
        bad = {k: v for k, v in r["seen"].items() if not k[1]}
        for (kind, ok), n in sorted(r["seen"].items()):
            print(f"{kind:9s} {'as expected' if ok else 'WRONG':12s} {n}")
        print(f"{sum(r['seen'].values())} requests in {r['seconds']:.0f} s; valid p50 {r['p50_ms']:.0f} ms; server RSS "
              f"{r['rss_start_mb']:.0f} MiB at start, {r['rss_warm_mb']:.0f} after warm-up, max "
              f"{r['rss_max_after_warm_mb']:.0f} after, {r['rss_end_mb']:.0f} at the end")
        return 1 if bad else 0
    print(f"| server | dynamic batching | requests | errors | req/s | p50 ms | p99 ms | peak RSS MiB |  "
          f"({args.clients} clients, 127.0.0.1)")
    print("|---|---|---|---|---|---|---|---|")
    runs = [(args.model_dir, True, None), (args.model_dir, False, None)]
    if args.export:
        runs += [(args.export, True, args.runtime_bin), (args.export, False, args.runtime_bin)]
    for where, batching, runtime_bin in runs:
        r = run_once(where, texts, args.clients, args.requests, batching, runtime_bin)
        print(f"| {r['server']} | {'on' if batching else 'off'} | {r['requests']} | {r['errors']} | "
              f"{r['req_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['peak_rss_mb']:.0f} |", flush=True)
    servers = [("seqattn serve", args.model_dir, None)]
    if args.export:
        servers.append(("seqattn-runtime serve", args.export, args.runtime_bin))
    for name, where, runtime_bin in servers:
        seconds = sorted(first_answer(where, runtime_bin, texts) for _ in range(args.startups))
        print(f"{name}: start-up to the first answer {statistics.median(seconds):.2f} s (median of {len(seconds)}: "
              f"{', '.join(f'{x:.2f}' for x in seconds)})", flush=True)
    if args.export:
        prefix = Path(args.runtime_bin).resolve().parent.parent
        size = subprocess.run(["du", "-sm", str(prefix)], capture_output=True, text=True, check=True).stdout.split()[0]
        print(f"{prefix}: {size} MB installed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
