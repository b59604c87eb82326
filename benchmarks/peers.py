"""seqattn beside OpenNMT-py and Joey NMT on Multi30k de->en, in one run (opt-in, not in CI).

usage: python benchmarks/peers.py --peers-venv PEERS/venv --work PEERS/work [--minutes 12]
                                  [--systems seqattn,onmt,joey]

PEERS is set up as ../shared/peers/README.md says (their own venv, `prepare.py` run into --work: one
joint SentencePiece model of 8k pieces and the split files). The peers run as processes from their
venv; nothing of theirs is imported here. For each system, one after the other on an otherwise idle
machine: train for --minutes of wall-clock time (matched sizes: embeddings 256, biLSTM 256x2, LSTM
decoder 512, Luong dot attention), then with the last checkpoint saved inside the budget: test2016
sacreBLEU greedy and beam 5, decoding sentences/s (batch 64, start-up excluded), `translate` start-up
to its first output (process wall time for one sentence, median of 3), peak RSS of training,
training target tokens/s (median of the logged windows after the first), and model-FLOP utilisation
against this machine's GEMM rate at each system's own shapes (seqattn.bench), read before and after
its turn (the mean of the two).

Writes benchmarks/results/peers.json, benchmarks/results/peers_bleu_time.png (test2016 greedy BLEU
of every saved checkpoint against training minutes) and prints the Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED_PEERS = ROOT.parent / "shared" / "peers"
TEST = "test_2016_flickr"
ONMT_ENV = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}   # its checkpoints hold pickled objects


def measured(cmd: list[str], log: Path, timeout_s: float | None = None, env: dict | None = None,
             stdin: Path | None = None) -> dict:
    """Run cmd (stdout+stderr to log) under GNU time; return rc, wall seconds and peak RSS in MiB.

    With timeout_s the command gets SIGINT at the budget (and SIGKILL 60 s later)."""
    rss_file = log.with_suffix(".rss")
    if timeout_s:
        cmd = ["timeout", "-s", "INT", "-k", "60", str(int(timeout_s)), *cmd]
    start = time.time()
    with open(log, "w") as out, open(stdin or os.devnull) as inp:
        rc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *cmd], stdout=out,
                            stderr=subprocess.STDOUT, stdin=inp, env={**os.environ, **(env or {})}).returncode
    wall = time.time() - start
    rss = rss_file.read_text().strip().splitlines()[-1]
    return {"rc": rc, "wall_s": wall, "max_rss_mb": int(rss) / 1024 if rss.isdigit() else None, "start": start}


def startup(cmd: list[str], stdin: Path | None = None, env: dict | None = None, runs: int = 3) -> float:
    """Return the median wall time of cmd (translating one sentence) over runs."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        with open(stdin or os.devnull) as inp:
            subprocess.run(cmd, stdin=inp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                           env={**os.environ, **(env or {})})
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bleu(hyps: list[str], refs: list[str]) -> float:
    from seqattn.evaluate import score

    return score(hyps, refs)["bleu"]


def unpiece(work: Path, path: Path) -> list[str]:
    """Return the detokenized lines of a file of space-separated pieces (as detok_eval.py does)."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(work / "spm.model"))
    return [sp.decode_pieces(line.split()) for line in path.read_text(encoding="utf-8").splitlines()]


def corpus_shape(src_file: Path, tgt_file: Path):
    """Return the BatchShape of a whole pieces corpus (per target token ratios are what matter)."""
    from seqattn.bench import BatchShape

    s = [len(x.split()) + 1 for x in src_file.read_text(encoding="utf-8").splitlines()]
    t = [len(x.split()) + 1 for x in tgt_file.read_text(encoding="utf-8").splitlines()]
    return BatchShape(len(s), sum(s), sum(t), sum(a * b for a, b in zip(s, t)))


def _gemm_rate_in_child(input_feeding: bool, tgt_vocab: int, shape, tcmalloc: bool) -> float:
    """Return the GEMM rate measured in a fresh process (with tcmalloc preloaded when asked and installed)."""
    import ctypes.util
    import dataclasses

    env = dict(os.environ)
    lib = ctypes.util.find_library("tcmalloc_minimal")
    if tcmalloc and lib:
        env["LD_PRELOAD"] = lib
    code = ("import sys, json, torch, os\n"
            "from seqattn.bench import BatchShape, gemm_rate\n"
            "from seqattn.config import ModelConfig\n"
            "torch.set_num_threads(os.cpu_count())\n"
            "a = json.loads(sys.argv[1])\n"
            "print(gemm_rate(ModelConfig(input_feeding=a['feed']), a['vocab'], BatchShape(**a['shape']), "
            "torch.device('cpu'), min_seconds=0.2))\n")
    arg = json.dumps({"feed": input_feeding, "vocab": tgt_vocab, "shape": dataclasses.asdict(shape)})
    out = subprocess.run([sys.executable, "-c", code, arg], capture_output=True, text=True, check=True, env=env,
                         cwd=ROOT)
    return float(out.stdout.strip().splitlines()[-1])


def gemm_read(input_feeding: bool, tgt_vocab: int, work: Path) -> float:
    """Return this machine's GEMM rate (FLOP/s) at the shapes of a 3,000-token batch of the corpus, the
    better of glibc malloc and tcmalloc, each read in a fresh process."""
    from seqattn.bench import BatchShape

    whole = corpus_shape(work / "train.sp.de", work / "train.sp.en")
    rows = round(3000 * whole.sentences / whole.tgt_tokens)          # sentences in a 3000-token batch
    scale = rows / whole.sentences
    typical = BatchShape(rows, round(whole.src_tokens * scale), round(whole.tgt_tokens * scale),
                         round(whole.attn_pairs * scale))
    return max(_gemm_rate_in_child(input_feeding, tgt_vocab, typical, preload) for preload in (False, True))


def mfu(tokens_per_s: float, input_feeding: bool, tgt_vocab: int, work: Path) -> dict:
    """Return FLOPs per target token, the GEMM rate at the model's shapes read now (after training), and
    the MFU against it (`with_read_before` then sets it against the mean of this and a read before)."""
    from seqattn.bench import train_flops
    from seqattn.config import ModelConfig

    whole = corpus_shape(work / "train.sp.de", work / "train.sp.en")
    per_token = train_flops(ModelConfig(input_feeding=input_feeding), tgt_vocab, whole) / whole.tgt_tokens
    rate = gemm_read(input_feeding, tgt_vocab, work)
    return {"flops_per_token": per_token, "gemm_gflops": rate / 1e9, "ceiling_tokens_per_s": rate / per_token,
            "mfu": tokens_per_s * per_token / rate}


def with_read_before(result: dict, before: float) -> dict:
    """Return result with its MFU against the mean of the GEMM rate read before the system's turn
    (`before`, FLOP/s) and the one `mfu` read after it: this machine's speed drifts by 20-30% within an
    hour, and a 12-minute training run sits between the two reads. Both reads stay in gemm_gflops_reads."""
    if "gemm_gflops" not in result:
        return result
    reads = [before / 1e9, result["gemm_gflops"]]
    rate = sum(reads) / 2
    ceiling = rate * 1e9 / result["flops_per_token"]
    return {**result, "gemm_gflops_reads": reads, "gemm_gflops": rate, "ceiling_tokens_per_s": ceiling,
            "mfu": result["tokens_per_s"] / ceiling}


# -- seqattn -----------------------------------------------------------------------------------------------
SEQATTN_DECODE = (
    "import json, sys, time, torch\n"
    "from seqattn.translator import Translator, SearchOptions\n"
    "model, ckpt, beam, src_file, hyp_file, q = sys.argv[1:7]\n"
    "tr = Translator.load(model, device='cpu', checkpoint=ckpt, quantize=q or None)\n"
    "from seqattn.device import freeze_loaded_objects\n"
    "freeze_loaded_objects()   # as `seqattn translate` does once the model is loaded\n"
    "src = open(src_file, encoding='utf-8').read().splitlines()\n"
    "t = time.perf_counter()\n"
    "out = tr.translate(src, batch_size=64, options=SearchOptions(beam=int(beam)))\n"
    "dt = time.perf_counter() - t\n"
    "open(hyp_file, 'w', encoding='utf-8').write(''.join(o.text + '\\n' for o in out))\n"
    "print(json.dumps({'seconds': dt}))\n")


def decode_seqattn(model: Path, ckpt: str, beam: int, work: Path, d: Path, quantize: str = "") -> tuple[float, float]:
    """Return (test2016 BLEU, sentences/s at batch 64, loading excluded) of a seqattn checkpoint, its defaults."""
    hyp = d / f"hyp.{Path(ckpt).stem}.b{beam}{quantize}"
    res = subprocess.run([sys.executable, "-c", SEQATTN_DECODE, str(model), ckpt, str(beam),
                          str(work / f"{TEST}.de"), str(hyp), quantize], capture_output=True, text=True, check=True)
    seconds = json.loads(res.stdout.strip().splitlines()[-1])["seconds"]
    refs = (work / f"{TEST}.en").read_text(encoding="utf-8").splitlines()
    return bleu(hyp.read_text(encoding="utf-8").splitlines(), refs), len(refs) / seconds


def run_seqattn(a, out: Path) -> dict:
    import yaml

    work, d = a.work, out / "seqattn"
    cfg = yaml.safe_load((ROOT / "examples" / "multi30k.yaml").read_text())
    cfg["model_dir"] = str(d / "model")
    cfg["data"].update(train_src=str(work / "train.de"), train_tgt=str(work / "train.en"),
                       valid_src=str(work / "val.de"), valid_tgt=str(work / "val.en"),
                       spm_model=str(work / "spm.model"))
    # the process also loads data and writes the last checkpoint: keep all of it inside the budget
    cfg["train"].update(max_minutes=a.minutes - 0.25, max_steps=a.seqattn_steps, valid_every=a.seqattn_steps // 5,
                        lr=a.seqattn_lr,
                        keep_last=10, tensorboard=False)
    if a.seqattn_dropout is not None:
        cfg["model"]["dropout"] = a.seqattn_dropout
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    seqattn = [sys.executable, "-m", "seqattn"]
    train = measured([*seqattn, "train", str(d / "config.yaml"), "--overwrite"], d / "train.log",
                     timeout_s=a.minutes * 60 + 120)
    model = d / "model"
    log = [json.loads(x) for x in (model / "train_log.jsonl").read_text().splitlines()]
    speeds = [r["tokens_per_s"] for r in log if r["kind"] == "train"][1:]
    minutes_at = {r["step"]: r["minutes"] for r in log if r["kind"] == "valid"}
    src = (work / f"{TEST}.de").read_text(encoding="utf-8").splitlines()
    decode = lambda ckpt, beam, quantize="": decode_seqattn(model, ckpt, beam, work, d, quantize)

    last = max(int(p.stem[5:]) for p in model.glob("step_*.pt"))
    result = {"train": train, "tokens_per_s": statistics.median(speeds), "steps": last,
              "tgt_vocab": sum(1 for _ in (model / "tgt_pieces.txt").open())}
    result["greedy_bleu"], result["greedy_sents_per_s"] = decode(f"step_{last}.pt", 1)
    result["beam5_bleu"], result["beam5_sents_per_s"] = decode(f"step_{last}.pt", 5)
    result["int8_greedy_bleu"], result["int8_greedy_sents_per_s"] = decode(f"step_{last}.pt", 1, "int8")
    result["int8_beam5_bleu"], result["int8_beam5_sents_per_s"] = decode(f"step_{last}.pt", 5, "int8")
    one = d / "one.de"
    one.write_text(src[0] + "\n", encoding="utf-8")
    result["startup_s"] = startup([str(Path(sys.executable).parent / "seqattn"), "translate", str(model),
                                   "--checkpoint", f"step_{last}.pt"], stdin=one)
    result["curve"] = [(minutes_at[s], decode(f"step_{s}.pt", 1)[0])
                       for s in sorted(int(p.stem[5:]) for p in model.glob("step_*.pt")) if s in minutes_at]
    result.update(mfu(result["tokens_per_s"], False, result["tgt_vocab"], work))
    return result


# -- OpenNMT-py --------------------------------------------------------------------------------------------
def decode_onmt(bin_: Path, ckpt: Path, beam: int, work: Path, d: Path) -> tuple[float, float]:
    """Return (test2016 BLEU, sentences/s at batch 64 as it reports them) of an OpenNMT-py checkpoint."""
    hyp = d / f"hyp.{ckpt.stem}.b{beam}"
    res = subprocess.run([str(bin_ / "onmt_translate"), "-model", str(ckpt), "-src", str(work / f"{TEST}.sp.de"),
                          "-output", str(hyp), "-beam_size", str(beam), "-batch_size", "64", "-report_time"],
                         capture_output=True, text=True, check=True, env={**os.environ, **ONMT_ENV})
    seconds = float(re.search(r"Total translation time \(s\):\s*([\d.]+)", res.stdout + res.stderr).group(1))
    refs = (work / f"{TEST}.en").read_text(encoding="utf-8").splitlines()
    return bleu(unpiece(work, hyp), refs), len(refs) / seconds


def run_onmt(a, out: Path) -> dict:
    work, d, bin_ = a.work, out / "onmt", a.peers_venv / "bin"
    d.mkdir(parents=True, exist_ok=True)
    cfg = d / "onmt.yaml"
    cfg.write_text((SHARED_PEERS / "onmt.yaml").read_text().replace("WORK/onmt", str(d / "run"))
                   .replace("WORK", str(work)))
    subprocess.run([str(bin_ / "onmt_build_vocab"), "-config", str(cfg), "-n_sample", "-1"], check=True,
                   capture_output=True)
    # checkpoints every 100 steps (its config says 300) so that the budget ends close to a saved one
    train = measured([str(bin_ / "onmt_train"), "-config", str(cfg), "-save_checkpoint_steps", str(a.peer_every)],
                     d / "train.log", timeout_s=a.minutes * 60)
    text = (d / "train.log").read_text(errors="replace")
    speeds = [float(m.group(1)) for m in re.finditer(r"\d+/\s*(\d+) tok/s", text)][1:]
    ckpts = sorted((d / "run").glob("model_step_*.pt"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    inside = [p for p in ckpts if p.stat().st_mtime - train["start"] <= a.minutes * 60]

    decode = lambda ckpt, beam: decode_onmt(bin_, ckpt, beam, work, d)

    last = inside[-1]
    result = {"train": train, "tokens_per_s": statistics.median(speeds), "steps": int(last.stem.rsplit("_", 1)[1])}
    result["greedy_bleu"], result["greedy_sents_per_s"] = decode(last, 1)
    result["beam5_bleu"], result["beam5_sents_per_s"] = decode(last, 5)
    one = d / "one.sp.de"
    one.write_text((work / f"{TEST}.sp.de").read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
    result["startup_s"] = startup([str(bin_ / "onmt_translate"), "-model", str(last), "-src", str(one),
                                   "-output", os.devnull], env=ONMT_ENV)
    result["curve"] = [((p.stat().st_mtime - train["start"]) / 60, decode(p, 1)[0]) for p in inside]
    result["tgt_vocab"] = sum(1 for _ in (d / "run" / "vocab.tgt").open()) + 4   # + <unk> <blank> <s> </s>
    result.update(mfu(result["tokens_per_s"], True, result["tgt_vocab"], work))
    return result


# -- Joey NMT ----------------------------------------------------------------------------------------------
def decode_joey(py: str, ckpt: Path, beam: int, work: Path, d: Path) -> tuple[float, float]:
    """Return (test2016 BLEU, sentences/s, process time including its start) of a Joey NMT checkpoint."""
    import yaml

    c = yaml.safe_load((d / "joey.yaml").read_text())
    c["testing"].update(load_model=str(ckpt), beam_size=beam)
    c["data"]["dev"] = c["data"]["test"]             # its `test` decodes dev and test: make both test2016
    tcfg = d / f"test.b{beam}.yaml"
    tcfg.write_text(yaml.safe_dump(c))
    hyp = d / f"hyp.{ckpt.stem}.b{beam}"
    t = time.perf_counter()
    subprocess.run([py, "-m", "joeynmt", "test", str(tcfg), "--output-path", str(hyp)], check=True,
                   capture_output=True)
    seconds = time.perf_counter() - t
    refs = (work / f"{TEST}.en").read_text(encoding="utf-8").splitlines()
    return bleu(unpiece(work, Path(f"{hyp}.test")), refs), 2 * len(refs) / seconds   # it decoded 2 x 1000


def run_joey(a, out: Path) -> dict:
    import yaml

    work, d, py = a.work, out / "joey", str(a.peers_venv / "bin" / "python")
    d.mkdir(parents=True, exist_ok=True)
    text = (SHARED_PEERS / "joey.yaml").read_text().replace("WORK/joey_model", str(d / "run"))
    cfg = yaml.safe_load(text.replace("WORK", str(work)))
    # validate (and so save) every 100 steps (its config says 300): at its speed 300 steps is past the budget
    cfg["training"]["validation_freq"] = a.peer_every
    cfg["training"]["logging_freq"] = min(cfg["training"]["logging_freq"], max(1, a.peer_every // 2))
    cfg["training"]["keep_best_ckpts"] = 50
    (d / "joey.yaml").write_text(yaml.safe_dump(cfg))
    train = measured([py, "-m", "joeynmt", "train", str(d / "joey.yaml"), "--skip-test"], d / "train.log",
                     timeout_s=a.minutes * 60)
    log = (d / "run" / "train.log").read_text(errors="replace") if (d / "run" / "train.log").exists() else ""
    speeds = [float(x) for x in re.findall(r"Tokens per Sec:\s*([\d.]+)", log)][1:]
    ckpts = sorted((p for p in (d / "run").glob("*.ckpt") if p.stem.isdigit()), key=lambda p: int(p.stem))
    inside = [p for p in ckpts if p.stat().st_mtime - train["start"] <= a.minutes * 60]

    decode = lambda ckpt, beam: decode_joey(py, ckpt, beam, work, d)

    result = {"train": train, "tokens_per_s": statistics.median(speeds) if speeds else None,
              "steps": int(inside[-1].stem) if inside else 0}
    if inside:
        last = inside[-1]
        result["greedy_bleu"], result["greedy_sents_per_s"] = decode(last, 1)
        result["beam5_bleu"], result["beam5_sents_per_s"] = decode(last, 5)
        one = d / "one.sp.de"
        one.write_text((work / f"{TEST}.sp.de").read_text(encoding="utf-8").splitlines()[0] + "\n",
                       encoding="utf-8")
        c = yaml.safe_load((d / "joey.yaml").read_text())
        c["testing"]["load_model"] = str(last)
        (d / "translate.yaml").write_text(yaml.safe_dump(c))
        result["startup_s"] = startup([py, "-m", "joeynmt", "translate", str(d / "translate.yaml")], stdin=one)
        result["curve"] = [((p.stat().st_mtime - train["start"]) / 60, decode(p, 1)[0]) for p in inside]
    vocab = d / "run" / "trg_vocab.txt"
    result["tgt_vocab"] = sum(1 for _ in vocab.open()) if vocab.exists() else None
    if result["tokens_per_s"] and result["tgt_vocab"]:
        result.update(mfu(result["tokens_per_s"], True, result["tgt_vocab"], work))
    return result


RUNNERS = {"seqattn": run_seqattn, "onmt": run_onmt, "joey": run_joey}
NAMES = {"seqattn": "seqattn", "onmt": "OpenNMT-py 3.5.1", "joey": "Joey NMT 2.3.0"}


def table(results: dict) -> str:
    """Return the Markdown table of results, with ratios to the best peer."""
    peers = [k for k in ("onmt", "joey") if k in results]
    rows = [("training target tokens/s", "tokens_per_s", True, "{:,.0f}"), ("MFU (GEMM rate at own shapes)", "mfu",
            True, "{:.1%}"), ("peak RSS of training (MiB)", "rss", False, "{:,.0f}"),
            ("test2016 BLEU greedy", "greedy_bleu", True, "{:.2f}"), ("test2016 BLEU beam 5", "beam5_bleu", True,
                                                                       "{:.2f}"),
            ("greedy sentences/s (batch 64)", "greedy_sents_per_s", True, "{:,.0f}"),
            ("beam-5 sentences/s (batch 64)", "beam5_sents_per_s", True, "{:,.0f}"),
            ("translate start-up to first output (s)", "startup_s", False, "{:.2f}"),
            ("steps in the budget", "steps", True, "{}")]
    for r in results.values():
        r["rss"] = r["train"]["max_rss_mb"]
    head = "| | " + " | ".join(NAMES[k] for k in results) + " | seqattn vs best peer |\n"
    head += "|---" * (len(results) + 2) + "|\n"
    lines = []
    for label, key, higher, fmt in rows:
        cells = [fmt.format(r[key]) if r.get(key) is not None else "n/a" for r in results.values()]
        ratio = ""
        vals = [results[p].get(key) for p in peers if results[p].get(key) is not None]
        if "seqattn" in results and vals and results["seqattn"].get(key) is not None:
            best = max(vals) if higher else min(vals)
            mine = results["seqattn"][key]
            ratio = f"{mine - best:+.2f} BLEU" if "bleu" in key else f"{mine / best:.2f}x" if best else ""
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ratio} |")
    return head + "\n".join(lines)


def decode_again(a) -> int:
    """Decode with the last in-budget checkpoint of each system of an earlier run, interleaved over rounds, so
    the decoding ratios come from one run on a quiet machine; print and save the medians."""
    saved = json.loads((a.out / "peers.json").read_text())
    systems = [k for k in a.systems.split(",") if k in saved]
    ckpt = {"seqattn": f"step_{saved.get('seqattn', {}).get('steps')}.pt",
            "onmt": a.out / "onmt" / "run" / f"model_step_{saved.get('onmt', {}).get('steps')}.pt",
            "joey": a.out / "joey" / "run" / f"{saved.get('joey', {}).get('steps')}.ckpt"}
    runs = {"seqattn": lambda beam, q: decode_seqattn(a.out / "seqattn" / "model", ckpt["seqattn"], beam, a.work,
                                                          a.out / "seqattn", q),
            "onmt": lambda beam, q: decode_onmt(a.peers_venv / "bin", ckpt["onmt"], beam, a.work, a.out / "onmt"),
            "joey": lambda beam, q: decode_joey(str(a.peers_venv / "bin" / "python"), ckpt["joey"], beam, a.work,
                                             a.out / "joey")}
    jobs = [(k, beam, "") for k in systems for beam in (1, 5)]
    if "seqattn" in systems:
        jobs += [("seqattn", beam, "int8") for beam in (1, 5)]
    seen: dict = {}
    for r in range(a.decode_only):
        for k, beam, q in jobs:
            score, speed = runs[k](beam, q)   # q: "int8" for seqattn's quantized rows
            seen.setdefault((k, beam, q), []).append((score, speed))
            print(f"round {r + 1}: {k} beam {beam} {q}: BLEU {score:.2f}, {speed:,.0f} sent/s", file=sys.stderr,
                  flush=True)
    out = {f"{k}/beam{beam}{'/' + q if q else ''}": {"bleu": v[0][0], "sents_per_s": statistics.median(s for _, s in v),
                                                      "all_sents_per_s": [s for _, s in v]}
           for (k, beam, q), v in seen.items()}
    out["_meta"] = {"date": datetime.date.today().isoformat(), "rounds": a.decode_only, "checkpoints": str(ckpt),
                    "command": f"python benchmarks/peers.py --peers-venv {a.peers_venv} --work {a.work} "
                               f"--out {a.out} --systems {a.systems} --decode-only {a.decode_only}"}
    dest = ROOT / "benchmarks" / "results"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "peers_decode.json").write_text(json.dumps(out, indent=1))
    best = {beam: max((out[f"{k}/beam{beam}"]["sents_per_s"] for k in systems if k != "seqattn"), default=None)
            for beam in (1, 5)}
    print("| | " + " | ".join(f"BLEU / sent/s {'greedy' if b == 1 else 'beam 5'}" for b in (1, 5)) + " |")
    print("|---|---|---|")
    for key in [k for k in out if not k.startswith("_")]:
        if key.endswith("beam5") or key.endswith("beam5/int8"):
            continue
        cells = []
        for beam in (1, 5):
            r = out[key.replace("beam1", f"beam{beam}")]
            ratio = f" ({r['sents_per_s'] / best[beam]:.2f}x)" if key.startswith("seqattn") and best[beam] else ""
            cells.append(f"{r['bleu']:.2f} / {r['sents_per_s']:,.0f}{ratio}")
        print(f"| {key.replace('/beam1', '')} | " + " | ".join(cells) + " |")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peers-venv", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True, help="prepare.py's output (spm.model, *.sp.*, raw splits)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "peers")
    ap.add_argument("--minutes", type=float, default=12.0)
    ap.add_argument("--seqattn-steps", type=int, default=1600, help="seqattn's cosine schedule length; the "
                    "wall-clock budget stops it earlier if the machine is slower")
    ap.add_argument("--seqattn-lr", type=float, default=0.005,
                    help="peak learning rate for the short budget: best validation BLEU after 1600 steps of "
                         "0.003-0.006 with model.init_range 0.1 (benchmarks/sweep.py, results/sweep_h200_init.json; "
                         "the 4,000-step recipe uses 0.002)")
    ap.add_argument("--seqattn-dropout", type=float, default=0.2,
                    help="model.dropout for the short budget (the 4,000-step recipe uses 0.3)")
    ap.add_argument("--systems", default="seqattn,onmt,joey")
    ap.add_argument("--peer-every", type=int, default=100, help="peers save a checkpoint every N steps (their "
                    "configs say 300, past the budget for Joey NMT)")
    ap.add_argument("--decode-only", type=int, metavar="REPEATS", default=0,
                    help="train nothing: decode test2016 again with the checkpoints of the run in --out, each system "
                         "in turn, REPEATS rounds; report median sentences/s (benchmarks/results/peers_decode.json)")
    a = ap.parse_args()
    a.work, a.out = a.work.resolve(), a.out.resolve()
    a.out.mkdir(parents=True, exist_ok=True)
    if a.decode_only:
        return decode_again(a)
    saved = a.out / "peers.json"
    results = json.loads(saved.read_text()) if saved.exists() else {}
    # the target vocabulary every system builds: the pieces of the training targets (+ 4 specials)
    vocab = len({p for line in (a.work / "train.sp.en").open(encoding="utf-8") for p in line.split()}) + 4
    for name in a.systems.split(","):
        print(f"== {name}", file=sys.stderr, flush=True)
        before = gemm_read(name != "seqattn", vocab, a.work)      # the peers run with input feeding
        results[name] = with_read_before(RUNNERS[name](a, a.out), before)
        saved.write_text(json.dumps(results, indent=1))
        print(json.dumps({k: v for k, v in results[name].items() if k != "curve"}), file=sys.stderr, flush=True)
    results = {k: results[k] for k in ("seqattn", "onmt", "joey") if k in results}
    from seqattn.plot import plot_curves

    dest = ROOT / "benchmarks" / "results"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "peers.json").write_text(json.dumps(results, indent=1))
    curves = {NAMES[k]: ([m for m, _ in r["curve"]], [b for _, b in r["curve"]]) for k, r in results.items()
              if r.get("curve")}
    plot_curves(curves, dest / "peers_bleu_time.png", "training wall-clock minutes", "test2016 BLEU (greedy)",
                title=f"Multi30k de→en, {a.minutes:g}-minute budget, {os.cpu_count()}-core CPU")
    print(f"{datetime.date.today()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch threads = cores; command: python benchmarks/peers.py --peers-venv {a.peers_venv} --work {a.work} "
          f"--minutes {a.minutes:g}\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
