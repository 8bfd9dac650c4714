"""`python -m miniclip ...`: train, eval, zeroshot, bench, tokenize."""
import argparse
import json
import sys

TRAIN_EXAMPLES = """examples:
  python -m miniclip train                                  # tiny CLIP on the built-in shapes (~4 min CPU)
  python -m miniclip train --steps 100 --name quick         # a quick look
  python -m miniclip train --dataset cifar10 --time-budget 10
  python -m miniclip train --dataset csv:my_pairs.tsv --epochs 20
  python -m miniclip train --name quick --resume            # continue a stopped run
  MINICLIP_DEVICE=cuda python -m miniclip train --dataset cifar100 --model small --epochs 30
"""

EVAL_EXAMPLES = """examples:
  python -m miniclip eval --checkpoint runs/shapes-tiny/checkpoint.npz
  python -m miniclip eval --checkpoint runs/cifar10-tiny/checkpoint.npz --dataset cifar10 --linear-probe
"""

ZEROSHOT_EXAMPLES = """examples:
  python -m miniclip zeroshot --checkpoint runs/cifar10-tiny/checkpoint.npz cat.jpg \\
      --labels "airplane,automobile,bird,cat,deer,dog,frog,horse,ship,truck"
  python -m miniclip zeroshot --checkpoint ViT-B/32 photo.jpg --labels "a dog,a cat,a diagram"
"""


def _parser():
    parser = argparse.ArgumentParser(prog="python -m miniclip",
                                     description="CLIP from scratch in NumPy.")
    sub = parser.add_subparsers(dest="command", required=True)

    from miniclip.train import DATASET_DEFAULTS, TrainConfig
    d = TrainConfig()                          # every default comes from TrainConfig
    per = {kind: ", ".join(f"{k} {v}" for k, v in values.items())
           for kind, values in DATASET_DEFAULTS.items()}
    t = sub.add_parser("train", help="train a CLIP from scratch", epilog=TRAIN_EXAMPLES,
                       description="Per-dataset defaults (for flags left unset): "
                                   + "; ".join(f"{k}: {v}" for k, v in per.items()),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--dataset", default=d.dataset, help="shapes | cifar10 | cifar100 | csv:PATH "
                                                        "(default: %(default)s)")
    t.add_argument("--model", help="a named config: micro, tiny, tiny-p4, cifar-tiny, small; "
                                    "ResNet towers: cifar-rn, micro-rn (default: per dataset, see above)")
    how_long = t.add_mutually_exclusive_group()
    how_long.add_argument("--steps", type=int, help="optimiser steps (default: per dataset)")
    how_long.add_argument("--epochs", type=float, help="passes over the training set")
    how_long.add_argument("--time-budget", type=float, metavar="MIN",
                          help="minutes of wall-clock time (the lr schedule follows the clock)")
    t.add_argument("--batch-size", type=int, default=d.batch_size, help="(default: %(default)s)")
    t.add_argument("--lr", type=float, help="peak learning rate (AdamW; default: per dataset)")
    t.add_argument("--weight-decay", type=float, default=d.weight_decay,
                   help="(default: %(default)s)")
    t.add_argument("--device", default=d.device, choices=["cpu", "cuda", "auto"])
    t.add_argument("--out", default=d.out, help="folder holding run folders (default: %(default)s)")
    t.add_argument("--name", help="run folder name (default: <dataset>-<model>)")
    t.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random crop + flip (default: on, except for shapes, whose captions "
                        "name left and right)")
    t.add_argument("--tokenizer", help="a BPE merges file (default: miniclip's own vocabulary)")
    t.add_argument("--train-size", type=int, help="shapes: number of training images")
    t.add_argument("--eval-every", type=int, help="steps between evaluations (default: 5 per run)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    e = sub.add_parser("eval", help="evaluate a checkpoint", epilog=EVAL_EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("--checkpoint", required=True, help="a miniclip checkpoint .npz")
    e.add_argument("--dataset", help="default: the dataset the checkpoint was trained on")
    e.add_argument("--linear-probe", action="store_true",
                   help="also fit a logistic regression on frozen image features (CIFAR)")
    e.add_argument("--probe-train-size", type=int, default=10000)

    z = sub.add_parser("zeroshot", help="classify images by text labels", epilog=ZEROSHOT_EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    z.add_argument("--checkpoint", required=True,
                   help="a miniclip checkpoint .npz, an OpenAI .pt, a HF folder or an OpenAI name")
    z.add_argument("images", nargs="+", help="image files")
    z.add_argument("--labels", required=True, help="comma-separated class names")
    z.add_argument("--template", default="a photo of a {}.", help="prompt for each label")

    b = sub.add_parser("bench", help="speed and memory benchmarks")
    b.add_argument("what", nargs="*", default=["all"],
                   help="autograd | model | tokenizer | data | all "
                        "(against PyTorch: python benchmarks/vs_torch.py)")

    k = sub.add_parser("tokenize", help="encode text, or train miniclip's own vocabulary")
    k.add_argument("text", nargs="*", help="text to encode")
    k.add_argument("--vocab", default="openai", help="openai | miniclip | PATH")
    k.add_argument("--train", action="store_true",
                   help="learn miniclip's shipped vocabulary from shapes captions and CIFAR prompts")
    k.add_argument("--out", help="where --train writes (default: miniclip/data/miniclip_bpe.txt.gz)")
    k.add_argument("--merges", type=int, help="number of merges for --train")
    return parser


def _train(args):
    import dataclasses
    from miniclip.train import TrainConfig, train
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    # unset flags (None) leave the TrainConfig default, per-dataset ones included
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields and v is not None})
    summary = train(cfg, resume=args.resume, progress=not args.no_progress)
    if summary.get("interrupted"):
        return 130
    _print_summary(summary)
    return 0


def _print_summary(summary):
    evaluation = summary["evaluation"]
    print()
    print(f"trained {summary['steps']} steps in {summary['wall_seconds']:.0f} s "
          f"({summary['images_per_second']:.0f} images/s on {summary['device']})")
    for key, value in evaluation.items():
        if isinstance(value, float) and key != "zero_shot_accuracy":
            print(f"  {key:28s} {100 * value:6.2f} %")
    zero_shot = summary["zero_shot"]
    if zero_shot:
        each = ", ".join(f"{key.split('/')[-1]} {100 * v:.1f} %" for key, v in zero_shot.items())
        print(f"zero-shot accuracy: {100 * summary['zero_shot_accuracy']:.2f} % "
              f"(mean of {len(zero_shot)}: {each})")
    else:
        print(f"{summary['headline']}: {100 * summary[summary['headline']]:.2f} % "
              "(no zero-shot task for this dataset)")
    print(f"run folder: {summary['checkpoint'].rsplit('/', 1)[0]}")


def _eval(args):
    from miniclip.checkpoint import model_from_checkpoint
    from miniclip.tasks import check_dataset, make_task
    from miniclip.evaluate import encode_images, linear_probe
    model, tokenizer, meta = model_from_checkpoint(args.checkpoint)
    trained = meta.get("config", {})
    dataset = args.dataset or trained.get("dataset", "shapes")
    check_dataset(dataset)
    if args.linear_probe and dataset not in ("cifar10", "cifar100"):
        raise SystemExit("--linear-probe works on cifar10 / cifar100")
    task = make_task(dataset, seed=trained.get("seed", 0),
                     image_size=model.config.image_resolution, train=False)
    result = task.evaluate(model, tokenizer)
    if args.linear_probe:
        from miniclip.data.cifar import load_cifar
        train_images, train_labels, _ = load_cifar(dataset, "train")
        test_images, test_labels, _ = load_cifar(dataset, "test")
        n = min(args.probe_train_size, len(train_images))
        result["linear_probe"] = linear_probe(encode_images(model, train_images[:n]),
                                              train_labels[:n],
                                              encode_images(model, test_images), test_labels)
    print(json.dumps(result, indent=2))
    return 0


def _zeroshot(args):
    import numpy as np
    from PIL import Image
    from miniclip.evaluate import encode_images, encode_texts
    from miniclip.data.transforms import Preprocess
    labels = [s.strip() for s in args.labels.split(",") if s.strip()]
    if args.checkpoint.endswith(".npz"):
        from miniclip.checkpoint import model_from_checkpoint
        model, tokenizer, _ = model_from_checkpoint(args.checkpoint)
    else:
        from miniclip.pretrained import load
        model, _ = load(args.checkpoint)
        tokenizer = None                       # OpenAI's vocabulary
    preprocess = Preprocess(model.config.image_resolution)
    text_features = encode_texts(model, [args.template.format(l) for l in labels], tokenizer)
    scale = float(np.exp(model.logit_scale.item()))
    for path in args.images:
        try:
            image = Image.open(path)
            pixels = preprocess(image)[None]
        except (OSError, ValueError) as err:
            raise SystemExit(f"cannot read image {path}: {err}")
        logits = scale * encode_images(model, pixels) @ text_features.T      # (1, L)
        probs = np.exp(logits - logits.max())
        probs = (probs / probs.sum())[0]
        print(f"\n{path}: top predictions")
        for i in np.argsort(-probs)[:5]:
            print(f"  {labels[i]:>24s}: {100 * probs[i]:.2f}%")
    return 0


def _tokenize(args):
    from miniclip.tokenizer import Tokenizer
    if args.train:
        from miniclip.data.vocab import build_default_vocab
        kwargs = {k: v for k, v in (("out_path", args.out), ("num_merges", args.merges)) if v}
        tok = build_default_vocab(**kwargs)
        print(f"trained a vocabulary of {len(tok)} tokens")
        return 0
    tok = {"openai": Tokenizer.openai, "miniclip": Tokenizer.default}.get(
        args.vocab, lambda: Tokenizer.from_file(args.vocab))()
    for text in args.text:
        ids = tok.encode(text)
        print(f"{text!r} -> {ids}  ({len(ids)} tokens; decoded {tok.decode(ids)!r})")
    return 0


def _bench(args):
    from miniclip import bench
    return bench.main(args.what)


def main(argv=None):
    args = _parser().parse_args(argv)
    command = {"train": _train, "eval": _eval, "zeroshot": _zeroshot, "bench": _bench,
               "tokenize": _tokenize}[args.command]
    try:
        return command(args)
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
