"""Evaluation figures: recall@k curves (Bell & Bala Fig. 12), a t-SNE map of the catalog drawn
with thumbnails (their Fig. 10), and uncurated grids of queries with their top-5 results.

Each function returns an RGB ``uint8 (H, W, 3)`` image; the CLI writes and logs them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np


def _figure_to_array(fig) -> np.ndarray:
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    return np.ascontiguousarray(rgba[..., :3])


def recall_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], title: str = "") -> np.ndarray:
    """Recall@k against k (log scale), one line per model, one panel per task.

    ``curves``: model name → {"scene_to_product": [recall@1, recall@2, ...], "product_to_scene": [...]}.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = (("scene_to_product", "scene → product (what is it?)"), ("product_to_scene", "product → scene (where is it used?)"))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    for ax, (key, label) in zip(axes, tasks):
        for name, c in curves.items():
            ys = [np.nan if v is None else v for v in c.get(key, [])]
            if ys:
                ax.plot(np.arange(1, len(ys) + 1), ys, label=name, linewidth=2)
        ax.set_xscale("log")
        ax.set_xlabel("k")
        ax.set_ylabel("recall@k")
        ax.set_ylim(0, 1)
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(label)
        ax.legend(loc="upper left", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    image = _figure_to_array(fig)
    plt.close(fig)
    return image


def tsne_map(embeddings: np.ndarray, thumbnails: np.ndarray, *, canvas: int = 3000, thumb: int = 56, seed: int = 0) -> np.ndarray:
    """A 2-D t-SNE of ``embeddings`` float (N, D), each point drawn as its ``thumbnails`` uint8 (N, S, S, 3)."""
    from sklearn.manifold import TSNE

    n = len(embeddings)
    out = np.full((canvas, canvas, 3), 255, np.uint8)
    if n < 3:
        return out
    xy = TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), init="pca", random_state=seed).fit_transform(np.asarray(embeddings, np.float64))
    xy = (xy - xy.min(0)) / np.maximum(xy.max(0) - xy.min(0), 1e-9)
    pos = (xy * (canvas - thumb)).astype(int)
    for (x, y), im in zip(pos, thumbnails):
        out[y : y + thumb, x : x + thumb] = cv2.resize(im, (thumb, thumb), interpolation=cv2.INTER_AREA)
    return out


def result_grid(rows: Sequence[tuple[np.ndarray, Sequence[np.ndarray], Sequence[bool], str]], size: int = 112) -> np.ndarray:
    """One row per query: the query crop, then its results; a result that is the true product gets a
    green frame. ``rows``: (query image, result images, is_true flags, caption)."""
    if not rows:
        return np.full((40, 200, 3), 255, np.uint8)
    cols = 1 + max(len(r[1]) for r in rows)
    gap, cap = 6, 16
    h = len(rows) * (size + cap + gap)
    w = cols * (size + gap) + gap
    out = np.full((h, w, 3), 255, np.uint8)
    for i, (query, results, truth, caption) in enumerate(rows):
        y = i * (size + cap + gap) + cap
        cv2.putText(out, caption[:90], (gap, y - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        tiles = [query, *results]
        for j, im in enumerate(tiles):
            x = gap + j * (size + gap)
            out[y : y + size, x : x + size] = cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA)
            if j == 0:
                cv2.rectangle(out, (x, y), (x + size - 1, y + size - 1), (40, 90, 220), 2)
            elif truth[j - 1]:
                cv2.rectangle(out, (x, y), (x + size - 1, y + size - 1), (0, 170, 0), 4)
    return out


def reliability_diagram(table: Sequence[Mapping], title: str = "") -> np.ndarray:
    """Observed frequency against predicted probability per bin (``engine.metrics.reliability``), with
    each bin's count; the diagonal is perfect calibration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5, 6), dpi=100, gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    used = [r for r in table if r["count"]]
    ax.plot([r["predicted"] for r in used], [r["observed"] for r in used], marker="o", linewidth=2, label="calibrator")
    ax.set_ylabel("observed share that is the product")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    ax.set_title(title, fontsize=9)
    hist.bar([(r["lo"] + r["hi"]) / 2 for r in table], [r["count"] for r in table], width=[r["hi"] - r["lo"] for r in table],
             edgecolor="white")
    hist.set_xlabel("predicted probability (same product)")
    hist.set_ylabel("results")
    fig.tight_layout()
    image = _figure_to_array(fig)
    plt.close(fig)
    return image
