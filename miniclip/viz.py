"""Pictures that teach: the similarity matrix, training curves, attention maps.

Needs matplotlib (`pip install -e .[lessons]`). Each function draws into a
new figure and returns it; with `path` it also saves a PNG (modest DPI).
"""
import matplotlib.pyplot as plt
import numpy as np


def _save(fig, path):
    if path is not None:
        fig.savefig(path, dpi=80, bbox_inches="tight")
        plt.close(fig)
    return fig


def similarity_matrix(similarity, texts=None, path=None, images=None, title="cosine similarity"):
    """Heatmap of an (N, N) image-text similarity matrix; the diagonal (positives) is boxed.

    similarity: (N, N), row i = image i, column j = text j.
    images: optional uint8 (N, S, S, 3) shown along the left edge.
    """
    similarity = np.asarray(similarity)
    n = len(similarity)
    fig, ax = plt.subplots(figsize=(2 + 0.5 * n, 1 + 0.45 * n))
    im = ax.imshow(similarity, cmap="viridis")
    for i in range(n):   # mark the positives
        ax.add_patch(plt.Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=1.5))
    ax.set_xlabel("text j")
    ax.set_ylabel("image i")
    if texts is not None:
        ax.set_xticks(range(n))
        ax.set_xticklabels([t if len(t) < 28 else t[:25] + "..." for t in texts],
                           rotation=60, ha="right", fontsize=7)
    if images is not None:
        ax.set_yticks([])
        for i, img in enumerate(images):
            ax.imshow(img, extent=(-1.5, -0.5, i + 0.5, i - 0.5))
        ax.set_xlim(-1.6, n - 0.5)
        ax.set_ylim(n - 0.5, -0.5)          # imshow of each thumbnail moved the y-limits
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
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
    axes[2].set_title("temperature τ = 1/exp(logit_scale)")
    for ax in axes:
        ax.set_xlabel("step")
    fig.tight_layout()
    return _save(fig, path)


def attention_map(image, attention, grid, path=None, title="class-token attention"):
    """Overlay how much the class token attends to each patch.

    image: uint8 (S, S, 3); attention: (grid*grid,) weights over patches.
    """
    heat = np.asarray(attention).reshape(grid, grid)
    fig, axes = plt.subplots(1, 2, figsize=(5, 2.5))
    axes[0].imshow(image)
    axes[0].set_title("image")
    axes[1].imshow(image)
    axes[1].imshow(heat, cmap="inferno", alpha=0.6,
                   extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5))
    axes[1].set_title(title)
    for ax in axes:
        ax.axis("off")
    return _save(fig, path)
