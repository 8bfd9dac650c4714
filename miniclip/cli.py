"""`python -m miniclip ...`: train, eval, zeroshot, bench, tokenize."""
import argparse
import json
import os
import sys

TRAIN_EXAMPLES = """examples:
  python -m miniclip train                                  # tiny CLIP on the built-in shapes (minutes on a CPU)
  python -m miniclip train --steps 100 --name quick         # a quick look
  python -m miniclip train --dataset cifar10 --time-budget 10
  python -m miniclip train --dataset csv:my_pairs.tsv --epochs 20
  python -m miniclip train --dataset csv:pairs.csv --csv-separator , --csv-caption-key caption
  python -m miniclip train --name quick --resume            # continue a stopped run
  python -m miniclip train --name quick --overwrite         # replace it with a new run
  MINICLIP_DEVICE=cuda python -m miniclip train --dataset cifar100 --model small --epochs 30
  OMP_NUM_THREADS=1 mpiexec -n 2 python -m miniclip train --batch-size 256   # 2 processes x 128 rows
  python -m miniclip train --batch-size 1024 --accum-freq 8   # gradient caching: 8 chunks of 128
  python -m miniclip train --loss siglip                    # SigLIP's sigmoid loss (docs/siglip.md)
  python -m miniclip train --temperature 0.3 --fixed-temperature   # τ held at 0.3
"""

EVAL_EXAMPLES = """examples:
  python -m miniclip eval --checkpoint runs/shapes-tiny/checkpoint.npz
  python -m miniclip eval --checkpoint runs/cifar10-cifar-rn/checkpoint.npz --dataset cifar10 --linear-probe
  python -m miniclip eval --checkpoint runs/cifar10-cifar-rn/checkpoint.npz --few-shot 1,2,4,8,16
  python -m miniclip eval --checkpoint ViT-B/32 --dataset cifar100       # the paper's protocol
  python -m miniclip eval --checkpoint ViT-B/32 --dataset karpathy:flickr30k/dataset_flickr30k.json \\
      --images flickr30k/flickr30k-images --split test
"""

ZEROSHOT_EXAMPLES = """examples:
  python -m miniclip zeroshot --checkpoint runs/cifar10-cifar-rn/checkpoint.npz cat.jpg \\
      --labels "airplane,automobile,bird,cat,deer,dog,frog,horse,ship,truck"
  python -m miniclip zeroshot --checkpoint ViT-B/32 photo.jpg --labels "a dog,a cat,a diagram"
"""


def _parser():
    """(the parser, {command: its subparser}); abbreviated flags are errors (allow_abbrev=False)."""
    parser = argparse.ArgumentParser(prog="python -m miniclip", allow_abbrev=False,
                                     description="CLIP from scratch in NumPy.")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (also: MINICLIP_DEBUG=1); "
                             "accepted anywhere on the command line")
    sub = parser.add_subparsers(dest="command", required=True)

    from miniclip.train import DATASET_DEFAULTS, TrainConfig
    d = TrainConfig()                          # every default comes from TrainConfig
    per = {kind: ", ".join(f"{k} {v}" for k, v in values.items())
           for kind, values in DATASET_DEFAULTS.items()}
    t = sub.add_parser("train", help="train a CLIP from scratch", epilog=TRAIN_EXAMPLES,
                       description="Per-dataset defaults (for flags left unset): "
                                   + "; ".join(f"{k}: {v}" for k, v in per.items()),
                       formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    t.add_argument("--dataset", default=d.dataset, help="shapes | cifar10 | cifar100 | csv:PATH | "
                                                        "karpathy:PATH (default: %(default)s)")
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
    t.add_argument("--name", help="run folder name inside --out; 'group/run1' is a nested folder "
                                  "(default: <dataset>-<model>, e.g. shapes-tiny)")
    t.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    t.add_argument("--overwrite", action="store_true",
                   help="replace the run already in the folder (deletes its checkpoints, "
                        "metrics, summary and plots); without it such a folder is refused")
    t.add_argument("--allow-changes", action="store_true",
                   help="with --resume: continue even though settings differ from the "
                        "checkpoint's (the change is noted in metrics.jsonl)")
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random crop + flip (default: on, except for shapes, whose captions "
                        "name left and right; CIFAR runs under ~10 epochs gain 2-4 points "
                        "with --no-augment, docs/cifar.md)")
    t.add_argument("--tokenizer", help="a BPE merges file (default: miniclip's own vocabulary)")
    t.add_argument("--train-size", type=int, help="shapes: number of training images")
    t.add_argument("--csv-separator", default=d.csv_separator, type=_separator,
                   help="csv:PATH: the column separator, one character; 'tab' or '\\t' for a "
                        "tab (default: tab)")
    t.add_argument("--csv-img-key", default=d.csv_img_key,
                   help="csv:PATH: the column of image paths (default: %(default)s)")
    t.add_argument("--csv-caption-key", default=d.csv_caption_key,
                   help="csv:PATH: the column of captions (default: %(default)s)")
    t.add_argument("--images", help="karpathy:PATH: the folder holding the images")
    t.add_argument("--eval-every", type=int,
                   help="steps between evaluations (default: 5 per run; every 200 with --time-budget)")
    t.add_argument("--log-every", type=int, default=d.log_every,
                   help="steps between lines of metrics.jsonl (default: %(default)s)")
    t.add_argument("--loss", default=d.loss, choices=["clip", "siglip"],
                   help="clip: OpenAI's softmax loss; siglip: SigLIP's sigmoid loss, with a learned "
                        "logit bias (default: %(default)s)")
    t.add_argument("--temperature", type=float, metavar="T",
                   help="initial temperature τ in (0, 1], logit_scale = ln(1/τ) "
                        "(default: 0.07 for clip, 0.1 for siglip)")
    t.add_argument("--fixed-temperature", action="store_true", default=d.fixed_temperature,
                   help="hold the temperature fixed (not learned, not in the optimiser)")
    t.add_argument("--accum-freq", type=int, default=d.accum_freq,
                   help="gradient caching: encode each process's rows in this many chunks: the "
                        "big batch's gradient with one chunk's activation memory (default: %(default)s)")
    t.add_argument("--distributed", action="store_true", default=None,
                   help="train over MPI (found by itself when mpiexec starts N > 1 processes; "
                        "needs pip install -e \".[distributed]\"); --batch-size is the global batch")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    e = sub.add_parser("eval", help="evaluate a checkpoint", epilog=EVAL_EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    e.add_argument("--checkpoint", required=True,
                   help="a miniclip checkpoint .npz, an OpenAI model name (ViT-B/32, RN50, ...) "
                        "or a file miniclip.load reads")
    e.add_argument("--dataset", help="shapes | cifar10 | cifar100 | csv:PATH | karpathy:PATH "
                                     "(a dataset_coco.json / dataset_flickr30k.json; default: "
                                     "the dataset the checkpoint was trained on)")
    e.add_argument("--images", help="karpathy:PATH: the folder holding the images")
    e.add_argument("--split", default="test",
                   help="karpathy:PATH: which split to score (default: %(default)s)")
    e.add_argument("--linear-probe", action="store_true",
                   help="also fit a logistic regression on frozen image features "
                        "(cifar10, cifar100, shapes)")
    e.add_argument("--few-shot", metavar="K,K,...",
                   help="also fit linear probes on k examples per class, e.g. 1,2,4,8,16,all "
                        "(cifar10, cifar100, shapes), printed beside the zero-shot accuracy")
    e.add_argument("--draws", type=int, default=5,
                   help="--few-shot: seeded draws of the k examples per k (default: %(default)s)")
    e.add_argument("--plot", help="--few-shot: where the curve's PNG goes (default: "
                                  "few_shot_<dataset>.png beside the checkpoint)")
    e.add_argument("--probe-train-size", type=int, default=10000,
                   help="training images the probes draw from (default: %(default)s)")
    e.add_argument("--json", action="store_true", help="print the raw result (fractions) as JSON")

    z = sub.add_parser("zeroshot", help="classify images by text labels", epilog=ZEROSHOT_EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    z.add_argument("--checkpoint", required=True,
                   help="a miniclip checkpoint .npz, an OpenAI .pt, a HF folder or an OpenAI name")
    z.add_argument("images", nargs="+", help="image files")
    z.add_argument("--labels", required=True, help="comma-separated class names")
    z.add_argument("--template", default="a photo of a {}.", help="prompt for each label")

    b = sub.add_parser("bench", help="speed and memory benchmarks", allow_abbrev=False)
    b.add_argument("what", nargs="*", default=["all"],
                   help="autograd | model | tokenizer | data | distributed | all "
                        "(against PyTorch: python benchmarks/vs_torch.py)")

    k = sub.add_parser("tokenize", help="encode text, or train miniclip's own vocabulary",
                       allow_abbrev=False)
    k.add_argument("text", nargs="*", help="text to encode")
    k.add_argument("--vocab", default="miniclip",
                   help="miniclip (the built-in vocabulary of models trained here) | openai | "
                        "PATH (default: %(default)s)")
    k.add_argument("--train", action="store_true",
                   help="learn miniclip's shipped vocabulary from shapes captions and CIFAR prompts")
    k.add_argument("--out", help="where --train writes (default: miniclip/data/miniclip_bpe.txt.gz)")
    k.add_argument("--merges", type=int, help="number of merges for --train")
    return parser, {"train": t, "eval": e, "zeroshot": z, "bench": b, "tokenize": k}


def _separator(text):
    """--csv-separator: 'tab' and a typed backslash-t mean a tab; anything else as given."""
    return "\t" if text in ("tab", "\\t") else text


def _train(args):
    import dataclasses
    from miniclip.train import TrainConfig, train
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    # unset flags (None) leave the TrainConfig default, per-dataset ones included
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields and v is not None})
    if args.resume:
        cfg = _resume_config(cfg, getattr(args, "explicit", set()))
    summary = train(cfg, resume=args.resume, progress=not args.no_progress,
                    allow_changes=args.allow_changes, overwrite=args.overwrite)
    if summary.get("interrupted"):
        return 130
    if "rank" in summary:                   # another process of a distributed run: rank 0 reports
        return 0
    _print_summary(summary)
    return 0


def _resume_config(cfg, explicit):
    """With --resume, the settings not given on the command line are the checkpoint's.

    explicit: the TrainConfig fields the command line set. Giving one of steps /
    epochs / time_budget replaces all three. A folder with no checkpoint, or one that
    cannot be read, is refused (miniclip.run.saved_settings).
    """
    import dataclasses
    from miniclip.run import RESUME_FREE, run_folder, saved_settings
    from miniclip.train import TrainConfig
    saved = saved_settings(run_folder(cfg))
    length = {"steps", "epochs", "time_budget"}
    keep = set(explicit) | RESUME_FREE | (length if length & set(explicit) else set())
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    taken = {k: v for k, v in saved.items() if k in fields and k not in keep}
    return TrainConfig(**{**dataclasses.asdict(cfg), **taken})


def _explicit_train_flags(argv):
    """The settings that flags on this `train` command line set (a parse without defaults)."""
    parser, commands = _parser()
    for action in commands["train"]._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_known_args(argv)[0]))


def _print_summary(summary):
    evaluation = summary["evaluation"]
    print()
    print(f"trained {summary['steps']} steps with the {summary.get('loss_type', 'clip')} loss "
          f"in {summary['wall_seconds']:.0f} s "
          f"({summary['images_per_second']:.0f} images/s on {summary['device']})")
    for key, value in evaluation.items():
        if isinstance(value, float) and key != "zero_shot_accuracy":
            print(f"  {key:34s} {100 * value:6.2f} %")
    zero_shot = summary["zero_shot"]
    if zero_shot:
        each = ", ".join(f"{key.split('/')[-1]} {100 * v:.1f} %" for key, v in zero_shot.items())
        print(f"zero-shot accuracy: {100 * summary['zero_shot_accuracy']:.2f} % "
              f"(mean of {len(zero_shot)}: {each})")
    else:
        print(f"{summary['headline']}: {100 * summary[summary['headline']]:.2f} % "
              "(no zero-shot task for this dataset)")
    print(f"run folder: {os.path.dirname(summary['checkpoint'])}")


def _eval(args):
    from miniclip.tasks import check_dataset, make_task
    if args.probe_train_size < 1:
        raise ValueError(f"--probe-train-size {args.probe_train_size}: must be an integer >= 1")
    if args.draws < 1:
        raise ValueError(f"--draws {args.draws}: must be an integer >= 1")
    shots = _shots(args.few_shot) if args.few_shot else None
    model, tokenizer, trained, preprocess = _eval_model(args.checkpoint)
    dataset = args.dataset or trained.get("dataset")
    if dataset is None:
        raise ValueError(f"--checkpoint {args.checkpoint} is not a miniclip run: name the data "
                         "with --dataset (cifar10, cifar100, karpathy:PATH, ...)")
    check_dataset(dataset)
    if (args.linear_probe or shots) and dataset not in ("cifar10", "cifar100", "shapes"):
        raise ValueError(f"--linear-probe / --few-shot: {dataset} has no classes; use "
                         "--dataset cifar10, cifar100 or shapes")
    seed = trained.get("seed", 0)
    task = make_task(dataset, seed=seed, image_size=model.config.image_resolution, train=False,
                     preprocess=preprocess, images=args.images, split=args.split)
    result = task.evaluate(model, tokenizer)
    if args.linear_probe or shots:
        result.update(_probes(args, model, preprocess, dataset, seed, shots, result))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    _print_evaluation(result)
    if dataset in ("cifar10", "cifar100") and preprocess is not None:
        _print_published(args.checkpoint, dataset, result)
    if shots:
        _print_few_shot(result["few_shot"], dataset, args.draws)
    return 0


def _eval_model(checkpoint):
    """(model, tokenizer, its training settings, preprocess) for `eval --checkpoint`: a miniclip
    run's .npz (its own tokenizer and settings; preprocess None: pixels as training saw them),
    else an OpenAI name or a file miniclip.load reads (OpenAI's preprocess and vocabulary,
    or a Hugging Face folder's)."""
    if checkpoint.endswith(".npz"):
        from miniclip.checkpoint import model_from_checkpoint
        model, tokenizer, meta = model_from_checkpoint(checkpoint)
        return model, tokenizer, {"dataset": "shapes", **meta.get("config", {})}, None
    from miniclip.pretrained import load, read_hf_tokenizer
    model, preprocess = load(checkpoint)
    return model, read_hf_tokenizer(checkpoint), {}, preprocess


def _shots(text):
    """--few-shot '1,2,4,all' -> (1, 2, 4, None): None is every training example."""
    shots = []
    for part in text.split(","):
        part = part.strip()
        if part == "all":
            shots.append(None)
        elif part.isdigit() and int(part) >= 1:
            shots.append(int(part))
        else:
            raise ValueError(f"--few-shot {text!r}: {part!r} is not a count; give "
                             "comma-separated integers >= 1 or 'all', e.g. 1,2,4,8,16,all")
    return tuple(dict.fromkeys(shots))


def _probes(args, model, preprocess, dataset, seed, shots, result):
    """The linear probe (--linear-probe) and the few-shot curve (--few-shot, plotted)."""
    from miniclip.evaluate import encode_images, few_shot_probe, linear_probe
    from miniclip.tasks import probe_data
    train_images, train_labels, test_images, test_labels, _, zero_shot_key = probe_data(
        dataset, seed, model.config.image_resolution, args.probe_train_size)
    train_features = encode_images(model, train_images, preprocess=preprocess)
    test_features = encode_images(model, test_images, preprocess=preprocess)
    out = {}
    if args.linear_probe:
        out["linear_probe"] = linear_probe(train_features, train_labels, test_features, test_labels)
    if shots:
        curve = few_shot_probe(train_features, train_labels, test_features, test_labels,
                               shots=shots, draws=args.draws, seed=seed)
        out["few_shot"] = {"zero_shot_metric": zero_shot_key,
                           "zero_shot": result[zero_shot_key],
                           "shots": {"all" if k is None else str(k): v for k, v in curve.items()}}
        path = args.plot or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint))
                                         if os.path.exists(args.checkpoint) else ".",
                                         f"few_shot_{dataset}.png")
        from miniclip.fileio import atomic_write
        from miniclip.viz import few_shot_curve
        title = f"{dataset}: few-shot linear probe"
        atomic_write(path, lambda f: few_shot_curve(out["few_shot"], title, f))   # PNG, closed
        out["few_shot"]["plot"] = path
    return out


def _print_published(checkpoint, dataset, result):
    """The paper's and CLIP_benchmark's zero-shot figures for this model, beside ours."""
    from miniclip.evaluate import PUBLISHED_ZERO_SHOT
    title = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}[dataset]
    published = PUBLISHED_ZERO_SHOT.get((checkpoint, dataset))
    ours = f"top-1 {100 * result['zero_shot_accuracy']:.2f} %"
    if result.get("top5") is not None:
        ours += f", top-5 {100 * result['top5']:.2f} %"
    if published is None:
        print(f"{checkpoint} on {title}: {ours}; no published figure for this model")
    else:
        print(f"{checkpoint} on {title}: {ours}; published top-1: CLIP paper (Table 11) "
              f"{published['paper']:.1f} %, CLIP_benchmark {published['clip_benchmark']:.1f} %")


def _print_few_shot(few_shot, dataset, draws):
    print(f"few-shot linear probe on {dataset} (mean ± spread over {draws} draws of k per "
          f"class; l2 chosen on held-out training examples)")
    print(f"  {'zero-shot':10s} {100 * few_shot['zero_shot']:6.2f} %   ({few_shot['zero_shot_metric']})")
    for k, v in few_shot["shots"].items():
        label = "all" if k == "all" else f"{k}-shot"
        print(f"  {label:10s} {100 * v['mean']:6.2f} ± {100 * v['std']:.2f} %")
    print(f"plot: {few_shot['plot']}")


def _print_evaluation(result):
    """eval's result in percentages, as train's summary prints them."""
    for key, value in result.items():
        if isinstance(value, float):
            print(f"  {key:34s} {100 * value:6.2f} %")
    if "per_class" in result:
        print("  per class: " + ", ".join(f"{name} {100 * v:.1f} %"
                                          for name, v in result["per_class"].items()))
    if "linear_probe" in result:
        probe = result["linear_probe"]
        print(f"  {'linear_probe':34s} {100 * probe['accuracy']:6.2f} % (l2 {probe['l2']:g}, "
              f"validation {100 * probe['val_accuracy']:.2f} %)")


def _zeroshot(args):
    import numpy as np
    from miniclip.evaluate import encode_images, encode_texts
    from miniclip.data.transforms import ImageRefusedError, Preprocess, open_image
    template = args.template
    rest = template.replace("{}", "", 1)  # with its one placeholder taken out: no braces left
    if "{}" not in template or "{" in rest or "}" in rest:
        raise ValueError(f"--template {template!r}: must hold exactly one {{}} (where each label "
                         "goes) and no other braces, e.g. 'a photo of a {}.'")
    labels = [s.strip() for s in args.labels.split(",") if s.strip()]
    if not labels:
        raise ValueError(f"--labels {args.labels!r}: no label; give comma-separated class "
                         "names, e.g. --labels 'a dog,a cat'")
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        print(f"note: --labels lists {', '.join(map(repr, repeated))} more than once; each "
              "label is scored once", file=sys.stderr)
        labels = list(dict.fromkeys(labels))          # first occurrences, in order
    if args.checkpoint.endswith(".npz"):
        from miniclip.checkpoint import model_from_checkpoint
        model, tokenizer, _ = model_from_checkpoint(args.checkpoint)
    else:
        from miniclip.pretrained import load, read_hf_tokenizer
        model, _ = load(args.checkpoint)
        tokenizer = read_hf_tokenizer(args.checkpoint)     # the folder's vocab.json + merges.txt; None: OpenAI's
    preprocess = Preprocess(model.config.image_resolution)
    text_features = encode_texts(model, [template.format(l) for l in labels], tokenizer)
    scale = float(np.exp(model.logit_scale.item()))
    for path in args.images:
        try:
            with open_image(path) as image:    # refuses FIFOs, folders, > MAX_PIXELS pixels
                pixels = preprocess(image)[None]
        except (OSError, SyntaxError, ValueError) as err:
            if isinstance(err, ImageRefusedError) or getattr(err, "filename", None):
                raise                          # its message names the file
            raise ValueError(f"cannot read the image {path}: {err}") from None
        except MemoryError:
            err = MemoryError(f"decoding the image {path} needs more memory than is free; shrink it")
            err.filename = path
            raise err from None
        logits = scale * encode_images(model, pixels) @ text_features.T      # (1, L)
        if not np.isfinite(logits).all():
            raise ValueError(f"{args.checkpoint}: the model gives non-finite (NaN or Inf) "
                             f"scores for {path}; its weights may hold NaN or Inf")
        if model.config.has_logit_bias:  # SigLIP: each label on its own, σ(logit + bias)
            probs = 0.5 * (1 + np.tanh((logits[0] + float(model.logit_bias.item())) / 2))   # = σ(x)
            print(f"\n{path}: top predictions (SigLIP model: sigmoid probabilities, each label "
                  "judged on its own; they need not sum to 100%)")
        else:                            # CLIP: a softmax over the labels
            probs = np.exp(logits - logits.max())
            probs = (probs / probs.sum())[0]
            print(f"\n{path}: top predictions")
        for i in np.argsort(-probs)[:5]:
            print(f"  {labels[i]:>24s}: {100 * probs[i]:.2f}%")
    return 0


def _tokenize(args):
    from miniclip.tokenizer import Tokenizer
    if args.merges is not None and args.merges < 1:
        raise ValueError(f"--merges {args.merges}: must be an integer >= 1")
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


# ---- errors: one line for every expected failure -------------------------------------

def _expected_errors():
    """The exception types that mean bad input or a bad environment, not a bug in miniclip."""
    import csv
    import pickle
    import tarfile
    from PIL import Image
    return (ValueError, KeyError, OSError, EOFError, OverflowError, RuntimeError, MemoryError,
            tarfile.TarError, csv.Error, pickle.UnpicklingError, Image.DecompressionBombError)


def error_message(err):
    """The one line `error: ...` shows for an expected failure: the whole message, in words.

    OSErrors say what happened to which path ('no such file: /data/pairs.tsv');
    others give their full text (not only their first argument).
    """
    import errno
    if isinstance(err, OSError) and err.errno is not None:
        where = err.filename if err.filename is not None else ""
        if err.filename2 is not None:
            where = f"{err.filename} -> {err.filename2}"
        words = {errno.ENOENT: "no such file or folder",
                 errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
                 errno.EISDIR: "a folder where a file is expected",
                 errno.ENOTDIR: "a file where a folder is expected",
                 errno.ENOSPC: "no space left on the device (free some space, or pick another "
                               "--out)",
                 errno.EROFS: "read-only file system (pick a writable --out)",
                 errno.EEXIST: "already exists"}.get(err.errno, err.strerror or str(err))
        return f"{words}: {where}" if where else words
    if isinstance(err, KeyError) and len(err.args) == 1 and not (
            isinstance(err.args[0], str) and " " in err.args[0]):
        return f"missing entry {err.args[0]!r} (the file or settings lack it)"
    if isinstance(err, MemoryError) and getattr(err, "filename", None):  # a reader names its file
        return f"out of memory: {err}"
    if isinstance(err, MemoryError):
        return "out of memory" + (f": {err}" if str(err) else "") + " (try a smaller --batch-size or model)"
    text = str(err) if not isinstance(err, KeyError) else err.args[0]
    return text or type(err).__name__


def _debug_requested(argv):
    return "--debug" in argv or os.environ.get("MINICLIP_DEBUG", "") not in ("", "0")


def main(argv=None):
    """Run a command; an expected failure prints one line `error: ...` and returns 2.

    A ValueError (a bad setting or file: its message says what to change) is that one
    line alone; other expected failures (files, memory, the environment) add how to see
    the traceback: --debug (anywhere on the command line) or MINICLIP_DEBUG=1, which show
    it instead. An unexpected exception type (a bug) always shows its traceback.
    A flag the command does not know is an error with that command's usage.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(argv)
    argv = [a for a in argv if a != "--debug"]
    parser, commands = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    command = {"train": _train, "eval": _eval, "zeroshot": _zeroshot, "bench": _bench,
               "tokenize": _tokenize}[args.command]
    if args.command == "train":
        args.explicit = _explicit_train_flags(argv)
    try:
        return command(args)
    except _expected_errors() as err:
        if debug:
            raise
        print(f"error: {error_message(err)}", file=sys.stderr)
        if not isinstance(err, ValueError):
            print("(run again with --debug or MINICLIP_DEBUG=1 for the traceback)", file=sys.stderr)
        return 2
