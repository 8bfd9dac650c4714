"""The workloads the side-by-side benchmark times, defined once for both sides.

benchmarks/vs_torch.py builds the same configs, batches and optimiser in
miniclip and in PyTorch (OpenAI's clip/model.py) from what is here, so the two
sides cannot drift apart. `matmul_flops` counts the matrix-product work of a
workload, to express its speed as a fraction of a plain GEMM.

  step-S    training step (forward, CLIP loss, backward, AdamW): OpenAI's
            architecture, ViT width 128, 4 layers, 4×4 patches on 32×32;
            text width 128, 4 layers, context 16, vocabulary 49,408;
            embedding 128; batch 128
  step-M    the same with widths 256, 6 + 6 layers, 4 heads, batch 256
  vit-b32   ViT-B/32 encode_image + encode_text, batch 32, no gradient
  gemm      one float32 (2048×2048) @ (2048×2048) product: the machine's rate
"""
import dataclasses

import numpy as np

from miniclip.config import CLIPConfig, get_config

CONFIG_S = CLIPConfig(embed_dim=128, image_resolution=32, vision_layers=4, vision_width=128,
                      vision_patch_size=4, context_length=16, vocab_size=49408,
                      transformer_width=128, transformer_heads=2, transformer_layers=4)
CONFIG_M = dataclasses.replace(CONFIG_S, embed_dim=256, vision_layers=6, vision_width=256,
                               transformer_width=256, transformer_heads=4, transformer_layers=6)
ADAMW = {"lr": 1e-4, "betas": (0.9, 0.98), "eps": 1e-6, "weight_decay": 0.1}
GEMM_SIZE = 2048


@dataclasses.dataclass(frozen=True)
class Workload:
    """What to run: a config, a batch, training or inference, and how many timed repeats."""
    name: str
    config: CLIPConfig
    batch: int
    train: bool
    repeats: int


WORKLOADS = {
    "step-S": Workload("step-S", CONFIG_S, 128, True, 5),
    "step-M": Workload("step-M", CONFIG_M, 256, True, 2),
    "vit-b32": Workload("vit-b32", get_config("ViT-B/32"), 32, False, 3),
}


def random_batch(config, batch, seed=0):
    """Images (N, 3, R, R) float32 and caption-like ids (N, C) int64: start, ids, end
    (the largest id, where both models read the text feature), then zeros."""
    rng = np.random.default_rng(seed)
    R, C, V = config.image_resolution, config.context_length, config.vocab_size
    images = rng.standard_normal((batch, 3, R, R)).astype(np.float32)
    ids = rng.integers(1, V - 2, (batch, C))
    ends = rng.integers(2, C, batch)
    ids[:, 0] = V - 2
    ids[np.arange(batch), ends] = V - 1
    ids[np.arange(C)[None, :] > ends[:, None]] = 0
    return images, ids


def transformer_flops(N, T, W):
    """Forward matmul FLOPs of one residual block: N sequences of T tokens, width W.

    q, k, v, out projections 4·W² and the MLP 8·W² per token (2 FLOPs per
    multiply-add), plus q kᵀ and p v: 2 · 2·T·W per token.
    """
    return 2 * N * T * 12 * W * W + 4 * N * T * T * W


def matmul_flops(workload):
    """Matrix-product FLOPs of one run of the workload (backward counted as 2× forward)."""
    c, N = workload.config, workload.batch
    grid = (c.image_resolution // c.vision_patch_size) ** 2
    forward = (c.vision_layers * transformer_flops(N, grid + 1, c.vision_width)
               + c.transformer_layers * transformer_flops(N, c.context_length, c.transformer_width)
               + 2 * N * grid * 3 * c.vision_patch_size ** 2 * c.vision_width      # patches
               + 2 * N * (c.vision_width + c.transformer_width) * c.embed_dim    # projections
               + 2 * N * N * c.embed_dim)                                         # logits
    return 3 * forward if workload.train else forward


def gemm_flops(size=GEMM_SIZE):
    return 2 * size ** 3
