"""Built-in tasks generated in code (no download): dates in many forms, arithmetic questions, long look-ups."""

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


QUESTION_FORMS = ["what is {x} {op} {y} ?", "how much is {x} {op} {y} ?", "{x} {op} {y} is what ?",
                  "what do you get for {x} {op} {y} ?", "compute {x} {op} {y} .", "{x} {op} {y} equals ?",
                  "tell me {x} {op} {y} .", "what is the result of {x} {op} {y} ?"]


def qa(n: int, rng: random.Random) -> list[tuple[str, str]]:
    """Return n (question in words, answer in digits) pairs: sums and differences of 0..20, products of 0..10
    (793 facts), each asked in one of the QUESTION_FORMS."""
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
        form = rng.choice(QUESTION_FORMS)
        pairs.append((form.format(x=number_words(a), op=op, y=number_words(b)), str(ans)))
    return pairs


LOOKUP = dict(zip("a b c d e f g h i j k l m n o p q r s t".split(), "apple bear cat dog egg fish goat hat ink jam "
                  "kite lion moon nest owl pig queen rose sun tree".split()))


def lookup(n: int, rng: random.Random, lengths: tuple[int, int] = (5, 100)) -> list[tuple[str, str]]:
    """Return n (letters, their words) pairs: 5 to 100 letters, each mapped to its word (LOOKUP), in order.

    A sentence-length-free look-up: what the model must carry from the source grows with its length, so
    a plain seq2seq, whose decoder sees the source only through the context vector, fails on long inputs,
    while attention reads each letter when it needs it (`benchmarks/long_inputs.py`)."""
    letters = list(LOOKUP)
    pairs = []
    for _ in range(n):
        src = [rng.choice(letters) for _ in range(rng.randint(*lengths))]
        pairs.append((" ".join(src), " ".join(LOOKUP[c] for c in src)))
    return pairs


def qa_fact(question: str) -> tuple[str, str, str]:
    """Return the fact a qa question asks: (first number, operation, second number), in words."""
    words = question.split()
    i = next(i for i, w in enumerate(words) if w in ("plus", "minus", "times"))
    return words[i - 1], words[i], words[i + 1]


TASKS = {"dates": dates, "qa": qa, "lookup": lookup}
FACTS = {"qa": qa_fact}   # tasks whose held-out inputs must ask what training asks, in other words


def make_splits(task: str, seed: int, n_train: int, n_valid: int, n_test: int) -> dict[str, list[tuple[str, str]]]:
    """Return {'train', 'valid', 'test'} pairs of a task; valid and test inputs never occur in train (a held-out
    qa question asks, in a form training never pairs with it, a fact that training asks in its other forms)."""
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
    train = train[:n_train]
    fact = FACTS.get(task)
    if fact:   # a held-out question whose fact training never asks is replaced by one whose fact it asks
        known, asked = {fact(s) for s, _ in train}, {s for s, _ in train}
        held = [h for h in held if fact(h[0]) in known]
        while len(held) < n_valid + n_test:
            for src, tgt in gen(n_valid + n_test, rng):
                if src not in seen and src not in asked and fact(src) in known and len(held) < n_valid + n_test:
                    seen.add(src)
                    held.append((src, tgt))
    return {"train": train, "valid": held[:n_valid], "test": held[n_valid:]}
