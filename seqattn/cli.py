"""`seqattn <command>`: parses arguments, calls the library, prints; the only place that exits."""

from __future__ import annotations

import argparse
import json
import sys

from seqattn_runtime.serve import add_arguments as add_serve_arguments


def _progress_callback(total: int | None, desc: str):
    """Return (callback, close) that drive a tqdm bar on stderr from training events."""
    from tqdm import tqdm

    bar = tqdm(total=total or None, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True,
               disable=None, mininterval=0.5)
    state: dict = {}   # the last logged window's loss and tokens/s (a step does not wait for its loss)

    def callback(kind: str, info: dict) -> None:
        if kind == "start":
            bar.n = info["step"]
            bar.write(f"training on {info['device']}: {info['train_pairs']} pairs in {info['batches']} batches, "
                      f"{info['params'] / 1e6:.2f}M parameters; fast modules: {', '.join(info['fast']) or 'none'}",
                      file=sys.stderr)
        elif kind == "step":
            bar.update(info["step"] - bar.n)
            post = {"ep": info["epoch"]}
            if state:
                post["loss"], post["tok/s"] = f"{state['loss']:.3f}", f"{state['tokens_per_s']:.0f}"
            bar.set_postfix(post, refresh=False)
        elif kind == "train":
            state.update(loss=info["loss"], tokens_per_s=info["tokens_per_s"])
        elif kind == "valid":
            bar.write(f"step {info['step']}: valid loss {info['loss']:.3f} ppl {info['ppl']:.2f} "
                      f"BLEU {info['bleu']:.2f} chrF {info['chrf']:.2f} exact {info['exact']:.1f}%"
                      f"{'  (best)' if info['best'] else ''}", file=sys.stderr)
        elif kind in ("info", "averaged", "end") and "message" in info:
            bar.write(info["message"], file=sys.stderr)

    return callback, bar.close


def cmd_train(args) -> int:
    import os

    from .config import load_config
    from .distributed import Dist, launch, peer_failed
    from .train import Trainer

    cfg = load_config(args.config)
    if args.nproc > 1 and "RANK" not in os.environ:   # each rank parses the same command line, RANK set
        return launch(args.argv, args.nproc)
    if args.model_dir:
        cfg.model_dir = args.model_dir
    if args.init_from:
        cfg.train.init_from = args.init_from
    if args.init_optimizer:
        cfg.train.init_optimizer = True
    dist = Dist.from_env()
    callback, close = _progress_callback(cfg.train.max_steps, "train") if dist.main else (None, lambda: None)
    try:
        result = Trainer(cfg, resume=args.resume, overwrite=args.overwrite, callback=callback, dist=dist).run()
    except Exception as e:
        if dist.active and peer_failed(e):
            return 3    # another rank failed and printed why; its launcher stops this one anyway
        raise
    finally:
        close()
    if dist.main:
        best = "none" if result["best"] is None else f"{result['best']:.2f} at step {result['best_step']}"
        print(f"stopped at step {result['step']} ({result['reason']}); best {result['metric']} {best}; "
              f"model in {cfg.model_dir}{f' ({dist.world} processes)' if dist.active else ''}", file=sys.stderr)
    return 0


def _read_input(path: str | None) -> list[str]:
    from .data.corpus import read_lines

    if path:
        return read_lines(path)
    data = sys.stdin.buffer.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        from .errors import SeqattnError

        raise SeqattnError(f"<stdin>:{line}: invalid UTF-8") from None
    return text.splitlines()


def _search_options(args):
    from .translator import SearchOptions

    return SearchOptions(beam=args.beam, nbest=args.nbest, alpha=args.alpha, sample=args.sample,
                         temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                         num_samples=args.num_samples, seed=args.seed,
                         coverage_penalty=args.coverage_penalty, stopping=args.stopping,
                         patience=args.patience, shortlist=args.shortlist).check()


def _add_search_args(p: argparse.ArgumentParser, nbest: bool) -> None:
    g = p.add_argument_group("search")
    g.add_argument("--beam", type=int, default=1, help="beam size (1: greedy)")
    g.add_argument("--alpha", type=float, default=1.0, help="GNMT length penalty exponent for beam search "
                   "(score / ((5 + length) / 6) ** alpha; 0: raw log-probabilities, which favour short outputs)")
    g.add_argument("--coverage-penalty", type=float, default=0.0, metavar="BETA", help="GNMT's coverage penalty "
                   "for beam search: each finished output's score gains BETA * sum_i log(min(attention source "
                   "position i received, 1)), favouring outputs that attend to every source word (0: off). The "
                   "exact stopping bound stays exact, the penalty being never positive; decoded by the plain search")
    g.add_argument("--shortlist", action="store_true", help="score only the target pieces the batch's source "
                   "pieces may bring (the model's shortlist.npz, from `seqattn shortlist`)")
    g.add_argument("--stopping", default=None, metavar="MODE", help="when beam search ends a sentence before "
                   "its length limit: exact (when no alive hypothesis can still enter the n-best), heuristic (when "
                   "the n-best beat the best alive hypothesis as if it ended now, Hugging Face's default) or "
                   "patience (at --patience x --beam finished hypotheses); default: the model's decode.stopping")
    g.add_argument("--patience", type=float, default=None, help="with --stopping patience: the factor "
                   "(default: the model's decode.patience, 1.0)")
    g.add_argument("--sample", action="store_true", help="sample instead of searching")
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens (0: all)")
    g.add_argument("--top-p", type=float, default=1.0, help="sample from the smallest set with this mass")
    g.add_argument("--seed", type=int, default=None, help="seed for reproducible sampling")
    if nbest:
        g.add_argument("--nbest", type=int, default=1, help="print the N best per input (<= --beam)")
        g.add_argument("--num-samples", type=int, default=1, help="samples per input (with --sample)")
    else:
        p.set_defaults(nbest=1, num_samples=1)


def _add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto: CUDA where there is a GPU, else the CPU")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir")
    p.add_argument("--checkpoint", help="checkpoint file in the model directory, or any path (default: "
                   "averaged.pt when training kept one, else best.pt)")
    p.add_argument("--batch-size", type=_positive_int, default=64, help="sentences decoded together")
    _add_device_arg(p)
    p.add_argument("--quantize", choices=["int8"], help="int8 dynamic quantization of the linear and LSTM "
                   "layers (CPU decoding: about 2x faster)")


def _add_ensemble_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ensemble", nargs="+", metavar="MODEL", help="more model directories or checkpoint files "
                   "decoding with MODEL_DIR's model, their log-probabilities averaged at every step (they must "
                   "share its vocabularies; a checkpoint outside a model directory takes MODEL_DIR's config)")


def _positive_int(text: str) -> int:
    """Return text as an int of at least 1 (argparse turns the ValueError into a one-line usage error)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _prefixes(path: str | None, lines: int) -> list[str] | None:
    """Return the target prefixes of --prefix FILE, one per input line (an empty line: none)."""
    if path is None:
        return None
    from .data.corpus import read_lines
    from .errors import SeqattnError

    prefixes = read_lines(path)
    if len(prefixes) != lines:
        raise SeqattnError(f"{path}: {len(prefixes)} prefixes for {lines} input lines (one per line, empty for none)")
    return prefixes


def cmd_translate(args) -> int:
    from seqattn_runtime.align import pharaoh

    from .device import freeze_loaded_objects
    from .translator import Translator

    options = _search_options(args)
    translator = Translator.load(args.model_dir, device=args.device, checkpoint=args.checkpoint,
                                 quantize=args.quantize, ensemble=args.ensemble)
    freeze_loaded_objects()
    lines = _read_input(args.input)
    prefixes = _prefixes(args.prefix, len(lines))
    align = args.align or args.align_threshold is not None
    results = translator.translate_n(lines, batch_size=args.batch_size, attention=bool(args.attention) or align,
                                     options=options, prefixes=prefixes)
    for n, outs in enumerate(results, 1):
        if outs and outs[0].truncated:
            print(f"seqattn: warning: input line {n} is longer than the model's {translator.cfg.data.max_len} "
                  f"pieces; translated its beginning only", file=sys.stderr)
    out = sys.stdout
    several = options.nbest > 1 or options.num_samples > 1
    for n, outs in enumerate(results):
        for r in outs:
            tail = f"\t{pharaoh(r.src_tokens, r.tgt_tokens, r.attention, args.align_threshold)}" if align else ""
            out.write((f"{n}\t{r.score:.4f}\t{r.text}" if several else r.text) + tail + "\n")
    out.flush()
    if args.attention:
        from .checkpoint import atomic_write

        records = [{"source": src, **r.to_dict()} for src, outs in zip(lines, results) for r in outs]
        atomic_write(args.attention, lambda f: f.write(json.dumps(records, ensure_ascii=False).encode("utf-8")))
    return 0


def cmd_shortlist(args) -> int:
    from .shortlist import build_shortlist

    path, shortlist = build_shortlist(args.model_dir, args.src, args.tgt, args.k, args.frequent)
    print(f"{path}: {len(shortlist.ids)} candidates for {len(shortlist.offsets) - 1} source pieces, "
          f"{len(shortlist.frequent)} target pieces in every batch", file=sys.stderr)
    return 0


def cmd_distill(args) -> int:
    from tqdm import tqdm

    from .data.corpus import read_lines
    from .device import freeze_loaded_objects
    from .distill import distill
    from .translator import Translator

    options = _search_options(args)
    lines = read_lines(args.src)
    translator = Translator.load(args.model_dir, device=args.device, checkpoint=args.checkpoint,
                                 quantize=args.quantize, ensemble=args.ensemble)
    freeze_loaded_objects()
    bar = tqdm(total=len(lines), desc="distill", unit="line", file=sys.stderr, disable=None, mininterval=1.0)

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    try:
        new = distill(translator, lines, args.out, options, args.batch_size, args.chunk, progress)
    finally:
        bar.close()
    print(f"{args.out}: {len(lines)} lines ({new} translated now, {len(lines) - new} before)", file=sys.stderr)
    return 0


def cmd_evaluate(args) -> int:
    from .data.corpus import read_parallel
    from .device import freeze_loaded_objects
    from .evaluate import score
    from .translator import Translator

    options = _search_options(args)
    src, ref = read_parallel(args.src, args.ref)
    translator = Translator.load(args.model_dir, device=args.device, checkpoint=args.checkpoint,
                                 quantize=args.quantize, ensemble=args.ensemble)
    freeze_loaded_objects()
    hyps = [r.text for r in translator.translate(src, batch_size=args.batch_size, options=options)]
    metrics = score(hyps, ref)
    if args.output:
        from pathlib import Path

        Path(args.output).write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
    if args.json:
        print(json.dumps(metrics))
    else:
        print(f"BLEU {metrics['bleu']:.2f}  lowercased {metrics['bleu_lc']:.2f}  chrF {metrics['chrf']:.2f}  "
              f"exact match {metrics['exact']:.2f}%  ({metrics['n']} sentences)")
        print(metrics["bleu_signature"])
        print(metrics["chrf_signature"])
    return 0


def cmd_score(args) -> int:
    from .data.corpus import read_parallel
    from .device import freeze_loaded_objects
    from .translator import Translator

    src, tgt = read_parallel(args.src, args.tgt)
    translator = Translator.load(args.model_dir, device=args.device, checkpoint=args.checkpoint,
                                 quantize=args.quantize)
    freeze_loaded_objects()
    scores = translator.forced_scores(src, tgt, batch_size=args.batch_size)
    if args.json:
        print(json.dumps([{"line": n, **s} for n, s in enumerate(scores, 1)]))
    else:
        print("line\tlogprob\ttokens\tppl")
        for n, s in enumerate(scores, 1):
            print(f"{n}\t{s['logprob']:.4f}\t{s['tokens']}\t{s['ppl']:.4f}")
    return 0


def cmd_explain(args) -> int:
    from .explain import explain, render, render_step
    from .translator import Translator

    translator = Translator.load(args.model_dir, device=args.device, checkpoint=args.checkpoint)
    e = explain(translator, args.text, args.reference, step=args.step)
    if args.json:
        print(json.dumps(e.to_dict(), ensure_ascii=False))
    else:
        print(render_step(e, args.numbers) if args.step else render(e, args.numbers))
    return 0


def cmd_export(args) -> int:
    from .export import export_model_dir

    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        from .errors import SeqattnError

        raise SeqattnError(f"export needs {e.name}: pip install onnx onnxruntime (or the [onnx] extra)") from None
    meta = export_model_dir(args.model_dir, args.out, args.checkpoint, args.quantize, args.shortlist)
    kind = "int8 weights, " if args.quantize else ""
    short = "step_shortlist.onnx, shortlist.npz, " if meta["shortlist"] else ""
    print(f"exported {args.model_dir} to {args.out}: encoder.onnx, step.onnx, {short}{', '.join(meta['tokenizers'])}, "
          f"seqattn.json ({kind}checked: onnx.checker, ONNX Runtime within {meta['max_diff']:.1e} of PyTorch)")
    return 0


def cmd_average(args) -> int:
    from pathlib import Path

    from .checkpoint import average_checkpoints, save_checkpoint

    save_checkpoint(average_checkpoints([Path(p) for p in args.checkpoints]), Path(args.out))
    print(f"averaged {len(args.checkpoints)} checkpoints into {args.out}", file=sys.stderr)
    return 0


def cmd_plot(args) -> int:
    from .errors import SeqattnError
    from .plot import plot_attention

    if args.from_json:
        try:
            records = json.loads(open(args.from_json, encoding="utf-8").read())
            rec = records[args.index]
            src, tgt, att, text = rec["source_tokens"], rec["target_tokens"], rec["attention"], rec["translation"]
            source = rec.get("source", "")
        except FileNotFoundError:
            raise SeqattnError(f"{args.from_json}: file not found") from None
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise SeqattnError(f"{args.from_json}: not an attention file from 'translate --attention' "
                               f"or no record {args.index} ({type(e).__name__})") from None
    else:
        if not (args.model_dir and args.text):
            raise SeqattnError("give MODEL_DIR and TEXT, or --from-json FILE")
        from .translator import Translator

        translator = Translator.load(args.model_dir, device=args.device)
        r = translator.translate([args.text], attention=True, options=_search_options(args))[0]
        src, tgt, att, text, source = r.src_tokens, r.tgt_tokens, r.attention, r.text, args.text
    if att is None:
        raise SeqattnError("this model has no attention (model.attention: none): nothing to plot")
    try:
        out = plot_attention(src, tgt, att, args.out, title=f"{source}  →  {text}" if source else text)
    except ValueError as e:
        raise SeqattnError(f"{args.out}: {e}") from None
    print(out)
    return 0


def cmd_bench(args) -> int:
    from .bench import run_bench
    from .config import ModelConfig
    from .device import pick_device

    seconds = 15.0 if args.quick else args.seconds
    model = ModelConfig(rnn=args.rnn, attention=args.attention)
    r = run_bench(seconds, model, args.src_vocab, args.tgt_vocab, args.batch_tokens, pick_device(args.device))
    print(f"model: {model.rnn} emb {model.emb_size}, encoder {model.enc_hidden_size}x2, decoder "
          f"{model.dec_hidden_size}, attention {model.attention}; vocab {args.src_vocab} -> {args.tgt_vocab}; "
          f"{r.steps} steps of {args.batch_tokens}-token synthetic batches on {r.device} ({r.allocator} malloc)")
    print(f"model FLOPs per target token (forward + backward): {r.flops_per_token / 1e6:.1f} M")
    if args.json:
        print(json.dumps(r.to_dict()))
    print(f"training {r.tokens_per_s:,.0f} target tokens/s; ceiling {r.ceiling_tokens_per_s:,.0f} tokens/s "
          f"(GEMM {r.gemm_flops_per_s / 1e9:.0f} GFLOP/s at the model's shapes, {len(r.gemm_probes)} reads "
          f"{min(r.gemm_probes) / 1e9:.0f}-{max(r.gemm_probes) / 1e9:.0f}); MFU {100 * r.mfu:.1f}%")
    return 0


def cmd_serve(args) -> int:
    from seqattn_runtime.serve import serve

    from .device import freeze_loaded_objects
    from .errors import SeqattnError
    from .translator import Translator

    if args.runtime == "onnx":
        from seqattn_runtime.serve.backend import RuntimeTranslator

        if args.quantize or args.ensemble or args.device == "cuda":
            raise SeqattnError("--runtime onnx serves the export as it is: no --quantize, --ensemble or --device cuda")
        translator = RuntimeTranslator(args.model_dir)
    else:
        translator = Translator.load(args.model_dir, device=args.device, quantize=args.quantize,
                                     ensemble=args.ensemble)
        freeze_loaded_objects()
    serve(translator, args, "seqattn")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    callback, close = _progress_callback(None, f"demo {args.task}")
    try:
        result = run_demo(args.task, args.out, seconds=args.seconds, seed=args.seed, callback=callback,
                          steps=args.steps, rnn=args.rnn, attention=args.attention)
    finally:
        close()
    print(f"task {args.task}: held-out exact match {result['exact']:.2f}% on {result['n_test']} inputs "
          f"after {result['train_seconds']:.0f} s of training ({result['steps']} steps)")
    for ex in result["examples"]:
        mark = "ok " if ex["ok"] else "BAD"
        print(f"  [{mark}] {ex['source']}  ->  {ex['output']}   (expected {ex['expected']})")
    print(f"attention heatmap: {result['heatmap'] or 'none (a model without attention)'}")
    print(f"model directory: {result['model_dir']}")
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "examples"}))
    return 0


def cmd_binarize(args) -> int:
    import time

    from .config import load_config
    from .data.binarized import binarize

    start = time.perf_counter()
    meta = binarize(load_config(args.config), args.out)
    print(f"{args.out}: {meta['pairs']:,} pairs ({meta['dropped']:,} dropped: empty or over data.max_len), "
          f"{meta['dtype']} ids, vocab {meta['src_vocab']} -> {meta['tgt_vocab']}, "
          f"{time.perf_counter() - start:.1f} s; train with data.binarized: {args.out}", file=sys.stderr)
    return 0


def cmd_data(args) -> int:
    from .data.multi30k import download

    for path in download(args.dir, base_url=args.url):
        print(path)
    return 0


def _train_parser(sub) -> None:
    """Declare `seqattn train`."""
    t = sub.add_parser("train", help="train a model from a YAML config")
    t.add_argument("config")
    t.add_argument("--model-dir", help="override the config's model_dir")
    t.add_argument("--resume", action="store_true", help="continue from the model directory's last.pt")
    t.add_argument("--overwrite", action="store_true", help="replace a trained model in the model directory")
    t.add_argument("--init-from", metavar="MODEL", help="fine-tune: start from this model directory's (or "
                   "checkpoint's) weights and tokenizers, with a fresh optimizer, schedule and step count "
                   "(train.init_from); the config's model and vocabulary settings must be the model's")
    t.add_argument("--init-optimizer", action="store_true", help="with --init-from: also load its optimizer "
                   "state (a run's last.pt holds one; train.init_optimizer)")
    t.add_argument("--nproc", type=int, default=1, help="training processes on this machine (DistributedDataParallel:"
                   " gloo on CPU, one GPU each with NCCL); or launch `seqattn train` under torchrun")
    t.set_defaults(func=cmd_train)


def _translate_parser(sub) -> None:
    """Declare `seqattn translate`."""
    tr = sub.add_parser("translate", help="translate stdin or --input with a trained model")
    _add_model_args(tr)
    _add_ensemble_arg(tr)
    tr.add_argument("--input", "-i", help="input file (.txt or .gz); default stdin")
    tr.add_argument("--attention", metavar="FILE.json", help="write tokens and attention matrices as JSON")
    tr.add_argument("--prefix", metavar="FILE", help="target prefixes, one per input line (empty: none): each "
                    "output starts with its prefix, forced, and the search goes on from there")
    tr.add_argument("--align", action="store_true", help="append to each output a TAB and its word alignment "
                    "from the attention, Pharaoh format (i-j: source word i, target word j, from 0)")
    tr.add_argument("--align-threshold", type=float, metavar="W", help="also align a target word to every "
                    "source word whose attention reaches W (one-to-many; implies --align)")
    _add_search_args(tr, nbest=True)
    tr.set_defaults(func=cmd_translate)


def _distill_parser(sub) -> None:
    """Declare `seqattn distill`."""
    di = sub.add_parser("distill", help="translate a training source with a teacher (a model or an ensemble), "
                        "for a student to train on (sequence-level knowledge distillation); resumable")
    _add_model_args(di)
    _add_ensemble_arg(di)
    di.add_argument("--src", required=True, help="the training source (.txt or .gz), one sentence per line")
    di.add_argument("--out", required=True, help="the translations, one per source line (plain text); an "
                    "existing file is continued where it ends")
    di.add_argument("--chunk", type=_positive_int, default=2000, help="lines translated and written at a time")
    _add_search_args(di, nbest=False)
    di.set_defaults(func=cmd_distill, beam=5)


def _shortlist_parser(sub) -> None:
    """Declare `seqattn shortlist`."""
    sl = sub.add_parser("shortlist", help="build a model's vocabulary shortlist from its training data "
                        "(MODEL_DIR/shortlist.npz), for decoding with --shortlist")
    sl.add_argument("model_dir")
    sl.add_argument("--src", help="training source file (default: the model's config's training data)")
    sl.add_argument("--tgt", help="training target file, line-aligned with --src")
    sl.add_argument("--k", type=int, default=50, help="target pieces kept per source piece, by Dice coefficient")
    sl.add_argument("--frequent", type=int, default=100, help="the most frequent target pieces every batch gets")
    sl.set_defaults(func=cmd_shortlist)


def _evaluate_parser(sub) -> None:
    """Declare `seqattn evaluate`."""
    e = sub.add_parser("evaluate", help="BLEU, chrF and exact match of a model on a test set")
    _add_model_args(e)
    _add_ensemble_arg(e)
    e.add_argument("--src", required=True)
    e.add_argument("--ref", required=True)
    e.add_argument("--output", "-o", help="also write the translations here")
    e.add_argument("--json", action="store_true", help="print the metrics as one JSON line")
    _add_search_args(e, nbest=False)
    e.set_defaults(func=cmd_evaluate)


def _score_parser(sub) -> None:
    """Declare `seqattn score`."""
    sc = sub.add_parser("score", help="per-sentence log-probability and perplexity under forced decoding")
    _add_model_args(sc)
    sc.add_argument("--src", required=True)
    sc.add_argument("--tgt", required=True)
    sc.add_argument("--json", action="store_true", help="JSON instead of TSV")
    sc.set_defaults(func=cmd_score)


def _explain_parser(sub) -> None:
    """Declare `seqattn explain`."""
    ex = sub.add_parser("explain", help="one sentence step by step: context vector, free decoding, teacher forcing"
                        " and, with --step, every quantity of one attention step")
    ex.add_argument("model_dir")
    ex.add_argument("text", help="the source sentence")
    ex.add_argument("--reference", help="a target sentence to feed under teacher forcing")
    ex.add_argument("--step", type=_positive_int, metavar="T",
                    help="print step T (from 1; of teacher forcing with --reference, else of free decoding): "
                    "s_t, the scores e_t, alpha_t, a_t, [a_t; s_t], s~_t and the 5 most likely y_t")
    ex.add_argument("--checkpoint", help="checkpoint file (default: as translate)")
    ex.add_argument("--numbers", type=_positive_int, default=8, help="how many numbers of each vector to print")
    _add_device_arg(ex)
    ex.add_argument("--json", action="store_true", help="print everything as one JSON line")
    ex.set_defaults(func=cmd_explain)


def _export_parser(sub) -> None:
    """Declare `seqattn export`."""
    xp = sub.add_parser("export", help="ONNX export (encoder + one decoder step) for seqattn-runtime, no PyTorch")
    xp.add_argument("model_dir")
    xp.add_argument("--out", required=True, help="the export directory (created)")
    xp.add_argument("--checkpoint", help="checkpoint file (default: as translate)")
    xp.add_argument("--quantize", choices=["int8"], help="int8 weights (ONNX Runtime's dynamic quantization): "
                    "a quarter of the size, about 4x faster one sentence at a time, outputs close to float32's")
    xp.add_argument("--shortlist", action="store_true", help="also export the step over a shortlist "
                    "(step_shortlist.onnx with MODEL_DIR/shortlist.npz), for seqattn-runtime's --shortlist")
    xp.set_defaults(func=cmd_export)


def _average_parser(sub) -> None:
    """Declare `seqattn average`."""
    av = sub.add_parser("average", help="average the weights of checkpoints (e.g. MODEL_DIR/step_*.pt)")
    av.add_argument("checkpoints", nargs="+")
    av.add_argument("--out", required=True, help="the averaged checkpoint (e.g. MODEL_DIR/averaged.pt)")
    av.set_defaults(func=cmd_average)


def _plot_parser(sub) -> None:
    """Declare `seqattn plot`."""
    pl = sub.add_parser("plot", help="draw an attention heatmap (.png/.svg/.pdf)")
    pl.add_argument("model_dir", nargs="?")
    pl.add_argument("text", nargs="?", help="the sentence to translate and plot")
    pl.add_argument("--from-json", metavar="FILE", help="plot a record of a 'translate --attention' file instead")
    pl.add_argument("--index", type=int, default=0, help="which record of --from-json (0-based)")
    pl.add_argument("--out", required=True, help="output image: .png, .svg or .pdf")
    _add_device_arg(pl)
    _add_search_args(pl, nbest=False)
    pl.set_defaults(func=cmd_plot)


def _serve_parser(sub) -> None:
    """Declare `seqattn serve`."""
    sv = sub.add_parser("serve", help="HTTP API and attention web page")
    sv.add_argument("model_dir", help="a model directory, or with --runtime onnx a `seqattn export` directory")
    sv.add_argument("--runtime", default="pytorch", choices=["pytorch", "onnx"],
                    help="onnx: serve an export with ONNX Runtime")
    _add_device_arg(sv)
    sv.add_argument("--quantize", choices=["int8"], help="int8 dynamic quantization (CPU)")
    _add_ensemble_arg(sv)
    add_serve_arguments(sv)
    sv.set_defaults(func=cmd_serve)


def _bench_parser(sub) -> None:
    """Declare `seqattn bench`."""
    b = sub.add_parser("bench", help="training tokens/s against this machine's GEMM ceiling (MFU)")
    b.add_argument("--quick", action="store_true", help="15 s of training steps (under a minute in all)")
    b.add_argument("--seconds", type=float, default=60, help="seconds of timed training steps")
    b.add_argument("--src-vocab", type=int, default=8000)
    b.add_argument("--tgt-vocab", type=int, default=4000)
    b.add_argument("--batch-tokens", type=int, default=3000)
    b.add_argument("--rnn", default="lstm", choices=["lstm", "gru"])
    b.add_argument("--attention", default="dot", choices=["dot", "general", "concat", "none"])
    _add_device_arg(b)
    b.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    b.set_defaults(func=cmd_bench)


def _demo_parser(sub) -> None:
    """Declare `seqattn demo`."""
    d = sub.add_parser("demo", help="train and show a built-in task (no download)")
    d.add_argument("--task", default="dates", choices=["dates", "qa"])
    d.add_argument("--out", default="demo_out", help="output directory (model, heatmap)")
    d.add_argument("--seconds", type=float, default=150, help="training budget in seconds")
    d.add_argument("--steps", type=int, default=0, help="also stop after this many steps (0: no limit)")
    d.add_argument("--seed", type=int, default=1234)
    d.add_argument("--rnn", default="lstm", choices=["lstm", "gru"], help="the RNN of encoder and decoder")
    d.add_argument("--attention", default="dot", choices=["dot", "general", "concat", "none"],
                   help="the attention score (none: the plain seq2seq, the context vector only)")
    d.add_argument("--json", action="store_true", help="print the metrics as one JSON line last")
    d.set_defaults(func=cmd_demo)


def _data_parser(sub) -> None:
    """Declare `seqattn data`."""
    da = sub.add_parser("data", help="download standard data sets")
    dsub = da.add_subparsers(dest="dataset", required=True)
    m = dsub.add_parser("multi30k", help="Multi30k task 1 raw files (de, en, fr, cs)")
    m.add_argument("--dir", required=True, help="where to put the files")
    m.add_argument("--url", default=None, help="base URL (default: the public Multi30k repository)")
    m.set_defaults(func=cmd_data)
    bz = dsub.add_parser("binarize", help="tokenize a config's training data once into memory-mapped id files")
    bz.add_argument("config")
    bz.add_argument("--out", required=True, help="output directory (replaced)")
    bz.set_defaults(func=cmd_binarize)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of every command."""
    from . import __version__

    p = argparse.ArgumentParser(prog="seqattn", description="Recurrent seq2seq with Luong attention.")
    p.add_argument("--version", action="version", version=f"seqattn {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _translate_parser(sub)
    _distill_parser(sub)
    _shortlist_parser(sub)
    _evaluate_parser(sub)
    _score_parser(sub)
    _explain_parser(sub)
    _export_parser(sub)
    _average_parser(sub)
    _plot_parser(sub)
    _serve_parser(sub)
    _bench_parser(sub)
    _demo_parser(sub)
    _data_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code (user errors: one line on stderr, code 2)."""
    from .errors import SeqattnError

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv                                  # the command line as given, for `train --nproc`
    try:
        return args.func(args)
    except SeqattnError as e:
        print(f"seqattn: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 1
    except KeyboardInterrupt:
        print("seqattn: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # an output path the user gave that cannot be written (permissions, full disk)
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"seqattn: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2


def entry() -> None:
    """The `seqattn` command: main() (under tcmalloc for the commands it speeds up), then leave without the
    interpreter's teardown."""
    from .process import leave, reexec_with_tcmalloc

    reexec_with_tcmalloc(sys.argv[1:])
    leave(main())


if __name__ == "__main__":
    entry()
