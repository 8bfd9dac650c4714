"""Pictures that teach: the similarity matrix, training curves, attention maps, the
few-shot curve.

matplotlib is one of miniclip's dependencies (setup.cfg). Each function draws into a
new figure and returns it; with `path` it also saves a PNG (modest DPI).
"""
import matplotlib.pyplot as plt
import numpy as np


def _save(fig, path):
    if path is not None:
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
    return fig


def annotate(ax, values, fmt="{:.2f}", masked=None):
    """Write each value in its cell of an imshow'd matrix (small matrices only), in white on dark
    cells and black on light ones; cells where `masked` is True get a hatched grey instead."""
    values = np.asarray(values)
    image = ax.get_images()[-1]
    for (i, j), v in np.ndenumerate(values):
        if masked is not None and masked[i, j]:
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="0.85", edgecolor="0.6",
                                       hatch="///", lw=0))
            continue
        r, g, b, _ = image.cmap(image.norm(v))
        colour = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
        ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7, color=colour)


# The most characters of a caption the similarity legend shows.
LEGEND_CHARS = 100


def shorten(text, limit=LEGEND_CHARS):
    """text on one line (runs of whitespace become one space), cut to `limit` characters
    with '...' when longer."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def similarity_matrix(similarity, texts=None, path=None, images=None, title="cosine similarity",
                      vmin=None, vmax=None, values=None, ax=None):
    """Heatmap of an (N, N) image-text similarity matrix; the diagonal (positives) is boxed.

    similarity: (N, N), row i = image i, column j = text j.
    texts: the N captions, shown under the matrix as a numbered legend (column j = text j),
           each on one line and cut to LEGEND_CHARS characters (a 100 KB caption would
           make the picture hundreds of thousands of pixels wide).
    images: optional uint8 (N, S, S, 3) shown along the left edge.
    vmin, vmax: the colour scale (give two matrices the same one to compare them).
    values: write each cell's number (default: when N <= 12).
    ax: draw into this axes instead of a new figure.
    """
    similarity = np.asarray(similarity)
    n = len(similarity)
    if ax is None:
        fig, ax = plt.subplots(figsize=(2.5 + 0.55 * n, 1.5 + 0.5 * n))
    else:
        fig = ax.figure
    im = ax.imshow(similarity, cmap="viridis", vmin=vmin, vmax=vmax)
    if values if values is not None else n <= 12:
        annotate(ax, similarity)
    for i in range(n):   # mark the positives
        ax.add_patch(plt.Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=1.5))
    ax.set_xlabel("text j")
    ax.set_ylabel("image i")
    ax.set_xticks(range(n))
    if texts is not None:
        legend = "\n".join(f"{j}: {shorten(t)}" for j, t in enumerate(texts))
        ax.annotate(legend, (0, 0), xycoords="axes fraction", xytext=(0, -34),
                    textcoords="offset points", va="top", ha="left", fontsize=7.5)
    if images is not None:
        ax.set_yticks([])
        for i, img in enumerate(images):
            ax.imshow(img, extent=(-1.5, -0.5, i + 0.5, i - 0.5))
        ax.set_xlim(-1.6, n - 0.5)
        ax.set_ylim(n - 0.5, -0.5)          # imshow of each thumbnail moved the y-limits
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, label="cosine similarity")
    return _save(fig, path)


def training_curves(history, path=None):
    """Loss, batch accuracy and temperature against step, from metrics records."""
    history = [r for r in history if "loss" in r]
    steps = [r["step"] for r in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3))
    axes[0].plot(steps, [r["loss"] for r in history])
    axes[0].set_title("contrastive loss")
    axes[1].plot(steps, [r["acc_i2t"] for r in history], label="image→text")
    axes[1].plot(steps, [r["acc_t2i"] for r in history], label="text→image")
    axes[1].set_title("batch accuracy")
    axes[1].legend()
    axes[2].plot(steps, [r["temperature"] for r in history])
    axes[2].set_title("temperature τ = 1/s = exp(−logit_scale)")
    for ax in axes:
        ax.set_xlabel("step")
    fig.tight_layout()
    return _save(fig, path)


def attention_map(image, attention, grid, path=None, title="class-token attention",
                  vmin=0.0, vmax=None):
    """Overlay how much the class token attends to each patch, with a colour bar.

    image: uint8 (S, S, 3); attention: (grid*grid,) weights over patches.
    vmin, vmax: the colour scale (default 0 to this map's maximum; share it to compare maps).
    """
    heat = np.asarray(attention).reshape(grid, grid)
    fig, axes = plt.subplots(1, 2, figsize=(5.5, 2.5))
    axes[0].imshow(image)
    axes[0].set_title("image")
    axes[1].imshow(image)
    im = axes[1].imshow(heat, cmap="inferno", alpha=0.6, vmin=vmin, vmax=vmax,
                        extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5))
    axes[1].set_title(title)
    for ax in axes:
        ax.axis("off")
    fig.colorbar(im, ax=axes[1], fraction=0.046, label="attention weight")
    return _save(fig, path)


def few_shot_curve(few_shot, title="few-shot linear probe", path=None):
    """Test accuracy against labelled examples per class (log scale), mean ± spread of the
    draws, with the zero-shot accuracy as a level line: the CLIP paper's Figure 6.

    few_shot: {'zero_shot': fraction, 'zero_shot_metric': name, 'shots': {'1': {'mean',
    'std', ...}, ..., 'all': {...}}} as `python -m miniclip eval --few-shot` makes it.
    """
    counts = [k for k in few_shot["shots"] if k != "all"]
    ks = [int(k) for k in counts]
    mean = np.array([100 * few_shot["shots"][k]["mean"] for k in counts])
    std = np.array([100 * few_shot["shots"][k]["std"] for k in counts])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    if ks:
        ax.errorbar(ks, mean, yerr=std, marker="o", capsize=3, label="linear probe (k per class)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
    if "all" in few_shot["shots"]:
        ax.axhline(100 * few_shot["shots"]["all"]["mean"], color="grey", linestyle=":",
                   label="linear probe, all examples")
    ax.axhline(100 * few_shot["zero_shot"], color="C3", linestyle="--",
               label=f"zero-shot ({few_shot['zero_shot_metric']})")
    ax.set_xlabel("labelled examples per class")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
