"""Built-in tasks generated in code (no download): dates in many forms, arithmetic questions."""

from __future__ import annotations

import calendar
import random

EN_MONTHS = [calendar.month_name[m] for m in range(1, 13)]
DE_MONTHS = ["Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September", "Oktober",
             "November", "Dezember"]
FR_MONTHS = ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
             "novembre", "décembre"]
ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
        "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def _date_forms(y: int, m: int, d: int) -> list[str]:
    """Return the ways the demo writes one date (Korean, English, German, French, numeric)."""
    en, yy = EN_MONTHS[m - 1], f"{y % 100:02d}"
    return [
        f"{y}년 {m}월 {d}일",
        f"{en} {d}, {y}",
        f"{d} {en[:3]} {yy}",
        f"{d} {en} {y}",
        f"{d}. {DE_MONTHS[m - 1]} {y}",
        f"{d} {FR_MONTHS[m - 1]} {y}",
        f"{d:02d}/{m:02d}/{y}",
        f"{y}.{m:02d}.{d:02d}",
    ]


def dates(n: int, rng: random.Random) -> list[tuple[str, str]]:
    """Return n (written date, ISO date) pairs; two-digit years mean 1950-2049."""
    pairs = []
    for _ in range(n):
        y, m = rng.randint(1950, 2049), rng.randint(1, 12)
        d = rng.randint(1, calendar.monthrange(y, m)[1])
        pairs.append((rng.choice(_date_forms(y, m, d)), f"{y:04d}-{m:02d}-{d:02d}"))
    return pairs


def number_words(n: int) -> str:
    """Return 0..99 in English words ('forty two')."""
    if n < 20:
        return ONES[n]
    return TENS[n // 10] + ("" if n % 10 == 0 else " " + ONES[n % 10])


def qa(n: int, rng: random.Random) -> list[tuple[str, str]]:
    """Return n (question in words, answer in digits) pairs: sums and differences of 0..20, products of 0..10."""
    pairs = []
    for _ in range(n):
        op = rng.choice(["plus", "minus", "times"])
        if op == "times":
            a, b = rng.randint(0, 10), rng.randint(0, 10)
            ans = a * b
        else:
            a, b = rng.randint(0, 20), rng.randint(0, 20)
            if op == "minus" and b > a:
                a, b = b, a
            ans = a + b if op == "plus" else a - b
        x, y = number_words(a), number_words(b)
        q = rng.choice([f"what is {x} {op} {y} ?", f"how much is {x} {op} {y} ?", f"{x} {op} {y} is what ?"])
        pairs.append((q, str(ans)))
    return pairs


TASKS = {"dates": dates, "qa": qa}


def make_splits(task: str, seed: int, n_train: int, n_valid: int, n_test: int) -> dict[str, list[tuple[str, str]]]:
    """Return {'train', 'valid', 'test'} pairs of a task; valid and test inputs never occur in train."""
    rng = random.Random(seed)
    gen = TASKS[task]
    held, seen = [], set()
    while len(held) < n_valid + n_test:
        for src, tgt in gen(n_valid + n_test, rng):
            if src not in seen and len(held) < n_valid + n_test:
                seen.add(src)
                held.append((src, tgt))
    train = []
    while len(train) < n_train:
        train.extend(p for p in gen(n_train, rng) if p[0] not in seen)
    return {"train": train[:n_train], "valid": held[:n_valid], "test": held[n_valid:]}
