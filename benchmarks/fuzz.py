"""Hostile input, many cases (opt-in, not in CI): the property checks of tests/test_fuzz.py, N examples each.

usage: python benchmarks/fuzz.py [--examples 1000]

For the config loader, the corpus reader, the tokenizer and the HTTP API, prints how many generated
cases gave a result and how many a clean error (one line / a 4xx JSON answer). Any crash, traceback,
500 or hang fails the run and prints the smallest failing input Hypothesis found.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_checks():
    sys.path.insert(0, str(ROOT / "tests"))
    spec = importlib.util.spec_from_file_location("test_fuzz", ROOT / "tests" / "test_fuzz.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CHECKS


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=1000)
    a = ap.parse_args()
    from hypothesis import HealthCheck, Phase, given, settings

    failed = False

    def property_of(strategy, check, counts):
        @settings(max_examples=a.examples, deadline=None, database=None,
                  phases=[Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck))
        @given(strategy)
        def run(value):
            counts[check(value)] += 1

        return run

    for name, (strategy, check) in load_checks().items():
        counts: collections.Counter = collections.Counter()
        run = property_of(strategy, check, counts)

        start = time.perf_counter()
        try:
            run()
            status = "no crash"
        except Exception as e:  # the falsifying example is printed by Hypothesis
            status = f"FAILED: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            failed = True
        print(f"{name:10s} {sum(counts.values()):5d} cases: {counts['ok']:5d} results, {counts['error']:5d} clean "
              f"errors; {status} ({time.perf_counter() - start:.0f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
