"""The ResNet tower against PyTorch eager, side by side: `python benchmarks/vs_torch_resnet.py`.

Needs torch and open_clip_torch (`pip install torch open_clip_torch`) in the same
environment: OpenAI's ModifiedResNet as open_clip ships it (the same code as
openai/CLIP's clip/model.py). Both libraries are imported here only; miniclip
itself never imports torch.

Measured, float32 on the CPU, the same shapes and thread count for both:
1. conv2d forward + backward for every distinct convolution of the `cifar-rn`
   image tower at batch 128 (input, weight and its gradient, input gradient);
2. one full training step of the `cifar-rn` CLIP at batch 128 (forward, loss,
   backward, AdamW step), OpenAI's architecture built by open_clip on the torch side.
The two sides alternate, round by round, so a busy machine slows both alike;
each figure is the median over the rounds, and the report is the ratio
miniclip / torch (below 1: miniclip is faster).
"""
import argparse
import dataclasses
import statistics
import time

import numpy as np

from miniclip.autograd.tensor import Tensor
from miniclip.loss import clip_loss
from miniclip.config import get_config
from miniclip.model import CLIP
from miniclip.optim import AdamW
import miniclip.functional as F


def conv_shapes(config, batch):
    """(N, C, H, W, O, k, stride, padding) of each distinct convolution in the ResNet tower."""
    model = CLIP(config)
    shapes, seen = [], set()
    R = config.image_resolution
    images = np.random.default_rng(0).standard_normal((2, 3, R, R)).astype(np.float32)
    recorded = []
    real = F.conv2d

    def spy(x, weight, bias=None, stride=1, padding=0):
        recorded.append((tuple(x.shape[1:]), tuple(weight.shape), stride, padding))
        return real(x, weight, bias, stride=stride, padding=padding)
    import miniclip.nn.conv as conv_module
    conv_module.F.conv2d = spy
    try:
        model.eval().encode_image(images)
    finally:
        conv_module.F.conv2d = real
    for (C, H, W), (O, _, k, _), stride, padding in recorded:
        key = (batch, C, H, W, O, k, stride, padding)
        if key not in seen:
            seen.add(key)
            shapes.append(key)
    return shapes


def time_once(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternate(fns, rounds):
    """{name: median seconds}, running the fns in turn each round (after one warm-up each)."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(time_once(fn))
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="cifar-rn")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-conv", action="store_true")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (set OPENBLAS_NUM_THREADS to the same for NumPy)")
    args = parser.parse_args(argv)
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    from open_clip.model import CLIP as TorchCLIP, CLIPTextCfg, CLIPVisionCfg

    config = dataclasses.replace(get_config(args.model), vocab_size=1000)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; model {args.model}, "
          f"batch {args.batch}, {args.rounds} alternating rounds, float32 CPU")
    rng = np.random.default_rng(0)

    totals = {"miniclip": 0.0, "torch": 0.0}
    if not args.skip_conv:
        print("conv2d forward+backward          miniclip    torch   ratio")
        for N, C, H, W, O, k, stride, padding in conv_shapes(config, args.batch):
            x = rng.standard_normal((N, C, H, W)).astype(np.float32)
            w = (rng.standard_normal((O, C, k, k)) * 0.1).astype(np.float32)
            g = rng.standard_normal((N, O, (H + 2 * padding - k) // stride + 1,
                                     (W + 2 * padding - k) // stride + 1)).astype(np.float32)
            tx, tw, tg = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(g)

            def ours():
                xi, wi = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
                F.conv2d(xi, wi, stride=stride, padding=padding).backward(g)

            def theirs():
                xi, wi = tx.clone().requires_grad_(), tw.clone().requires_grad_()
                torch.nn.functional.conv2d(xi, wi, stride=stride, padding=padding).backward(tg)
            t = alternate({"miniclip": ours, "torch": theirs}, args.rounds)
            totals["miniclip"] += t["miniclip"]
            totals["torch"] += t["torch"]
            print(f"  {C:4d}x{H:2d}x{W:2d} -> {O:4d} k{k} s{stride} p{padding}   {1e3 * t['miniclip']:7.1f} ms "
                  f"{1e3 * t['torch']:7.1f} ms  {t['miniclip'] / t['torch']:5.2f}x")
        print(f"  all convolutions of one tower pass: {totals['miniclip'] / totals['torch']:.2f}x")

    # one full training step
    ours_model = CLIP(config).train()
    opt = AdamW(ours_model.parameters(), lr=1e-4)
    theirs_model = TorchCLIP(
        config.embed_dim,
        CLIPVisionCfg(layers=config.vision_layers, width=config.vision_width,
                      image_size=config.image_resolution),
        CLIPTextCfg(context_length=config.context_length, vocab_size=config.vocab_size,
                    width=config.transformer_width, heads=config.transformer_heads,
                    layers=config.transformer_layers),
        quick_gelu=True).train()
    theirs_opt = torch.optim.AdamW(theirs_model.parameters(), lr=1e-4)
    images = rng.standard_normal((args.batch, 3, config.image_resolution,
                                  config.image_resolution)).astype(np.float32)
    ids = rng.integers(1, 998, (args.batch, config.context_length))
    ids[:, -1] = 999
    timages, tids = torch.from_numpy(images), torch.from_numpy(ids)
    labels = torch.arange(args.batch)

    def our_step():
        logits_per_image, logits_per_text = ours_model(images, ids)
        loss = clip_loss(logits_per_image, logits_per_text)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def their_step():
        image_features, text_features, logit_scale = theirs_model(timages, tids)
        logits = logit_scale * image_features @ text_features.T
        loss = (torch.nn.functional.cross_entropy(logits, labels)
                + torch.nn.functional.cross_entropy(logits.T, labels)) / 2
        theirs_opt.zero_grad()
        loss.backward()
        theirs_opt.step()
    t = alternate({"miniclip": our_step, "torch": their_step}, args.rounds)
    n_ours = ours_model.num_parameters()
    n_theirs = sum(p.numel() for p in theirs_model.parameters())
    print(f"training step ({n_ours:,} / {n_theirs:,} parameters): miniclip {t['miniclip']:.3f} s, "
          f"torch {t['torch']:.3f} s, ratio {t['miniclip'] / t['torch']:.2f}x")


if __name__ == "__main__":
    main()
