"""Attention heatmaps with matplotlib (non-ASCII text, Korean included, rendered with a CJK font)."""

from __future__ import annotations

from pathlib import Path

CJK_FONTS = ["Noto Sans CJK KR", "Noto Sans CJK JP", "Noto Sans CJK SC", "NanumGothic", "Droid Sans Fallback"]


def _font_families() -> list[str]:
    """Return a font fallback list: DejaVu Sans first, then the CJK fonts matplotlib can find."""
    from matplotlib import font_manager

    names = {f.name for f in font_manager.fontManager.ttflist}
    return ["DejaVu Sans"] + [f for f in CJK_FONTS if f in names]


def plot_attention(src_tokens: list[str], tgt_tokens: list[str], weights, path: str | Path,
                   title: str | None = None) -> Path:
    """Write a heatmap of weights (len(tgt_tokens) x len(src_tokens)) to path (.png/.svg/.pdf); return path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    w = np.asarray(weights, dtype=float)
    if w.shape != (len(tgt_tokens), len(src_tokens)):
        raise ValueError(f"attention is {w.shape}, tokens are {len(tgt_tokens)} x {len(src_tokens)}")
    cell = 0.42
    fig_w = min(40.0, 2.5 + cell * len(src_tokens))
    fig_h = min(40.0, 2.0 + cell * len(tgt_tokens))
    with plt.rc_context({"font.family": _font_families(), "axes.unicode_minus": False}):
        fig, ax = plt.subplots(figsize=(fig_w, fig_h))
        im = ax.imshow(w, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(src_tokens)), [t.replace("▁", "_") for t in src_tokens], rotation=60,
                      ha="right", fontsize=9)
        ax.set_yticks(range(len(tgt_tokens)), [t.replace("▁", "_") for t in tgt_tokens], fontsize=9)
        ax.set_xlabel("source")
        ax.set_ylabel("output")
        if title:
            ax.set_title(title, fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="attention weight")
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return path


def plot_curves(series: dict[str, tuple[list[float], list[float]]], path: str | Path, xlabel: str, ylabel: str,
                title: str | None = None) -> Path:
    """Write a line plot of each label's (x values, y values) to path; return path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, (x, y) in series.items():
        ax.plot(x, y, marker="o", markersize=3, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
