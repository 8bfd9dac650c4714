"""What every lesson shares, in one place: fast mode, figure settings, where the optional shared
files are, and the one training run on the captioned shapes that lessons 01, 06, 07 and 08 read.

    from course import FAST, FIXTURES, ASSETS, DATA, setup, shared_run, shown
    setup()                                  # figures at 110 dpi, readable fonts
    model, tokenizer, meta, run = shared_run()

Nothing here is part of miniclip: it only calls miniclip's public API (`miniclip.train.train`,
`TrainConfig`, `model_from_checkpoint`) so that the notebooks stay about CLIP, not about setup.
"""
import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

LESSONS = Path(__file__).resolve().parent
REPO = LESSONS.parent

FAST = os.environ.get("MINICLIP_FAST", "0") == "1"   # MINICLIP_FAST=1: a quick run (what the tests do)


def _shared(variable, name):
    """A shared folder: $variable if set, else ../shared/<name> beside the repository."""
    return Path(os.environ.get(variable) or REPO.parent / "shared" / name).expanduser().resolve()


FIXTURES = _shared("MINICLIP_FIXTURES", "fixtures")  # reference outputs of OpenAI's code (lesson 09)
ASSETS = _shared("MINICLIP_ASSETS", "assets")        # OpenAI's vocabulary, pretrained weights
DATA = _shared("MINICLIP_DATA", "data")              # CIFAR archives


def setup():
    """Figure and print settings shared by the lessons; tells miniclip where the shared folders are."""
    import matplotlib.pyplot as plt
    import numpy as np

    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 110, "font.size": 9,
                         "axes.titlesize": 10, "xtick.labelsize": 8, "ytick.labelsize": 8,
                         "legend.fontsize": 8, "image.cmap": "viridis"})
    np.set_printoptions(precision=4, suppress=True, linewidth=110)
    os.environ.setdefault("MINICLIP_ASSETS", str(ASSETS))   # miniclip reads these variables
    os.environ.setdefault("MINICLIP_DATA", str(DATA))


def shown(path):
    """A path as it may appear in a notebook's output: relative to the repository, to the cache
    ($MINICLIP_CACHE) or to the home folder, never this machine's absolute layout."""
    from miniclip.download import cache_dir

    path = Path(path).expanduser().resolve()
    for base, name in ((REPO, ""), (cache_dir().resolve(), "$MINICLIP_CACHE/"),
                       (REPO.parent / "shared", "../shared/"), (Path.home().resolve(), "~/")):
        try:
            return name + str(path.relative_to(base))
        except ValueError:
            continue
    return path.name


# ---- freshness --------------------------------------------------------------

def source_files(lessons_helper=True):
    """The code a notebook's outputs depend on besides its own cells: miniclip/**/*.py, and this
    file. (Not the other notebooks: a new lesson does not make the old ones stale.)"""
    files = sorted(REPO.glob("miniclip/**/*.py"))
    return files + [LESSONS / "course.py"] if lessons_helper else files


def source_hashes(lessons_helper=True):
    """{path relative to the repo: sha256 of its bytes (first 16 hex digits)}."""
    return {p.relative_to(REPO).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()[:16]
            for p in source_files(lessons_helper)}


def combined_hash(hashes):
    """One digest for a {name: digest} dict."""
    return hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:16]


# ---- the shared training run --------------------------------------------------

def shared_config():
    """The TrainConfig of the lessons' shared run: miniclip's default recipe for the shapes
    (TrainConfig's per-dataset defaults: the `tiny` config, its steps and learning rate), cut to
    150 steps in fast mode; no evaluation during the run (the lessons evaluate it themselves)."""
    from miniclip.train import TrainConfig

    return TrainConfig(dataset="shapes", steps=150 if FAST else None, out=str(REPO / "runs" / "lessons"),
                       name="shapes-fast" if FAST else "shapes", eval_every=10**9)


def _stamp(cfg):
    """What a finished run must match to be reused: its config and the miniclip source."""
    train = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "out"}
    return {"config": train, "miniclip_source": combined_hash(source_hashes(lessons_helper=False))}


def shared_run(cfg=None, progress=True):
    """Train the run once (with a progress bar), or load it if a finished run with the same config
    and the same miniclip source is on disk (a folder made otherwise is trained again, silently:
    a regeneration never mixes old and new outputs). Returns (model, tokenizer, meta, run folder)."""
    from miniclip.checkpoint import model_from_checkpoint
    from miniclip.train import train

    cfg = cfg or shared_config()
    run = Path(cfg.out) / cfg.name
    stamp_file = run / "lessons_stamp.json"
    wanted = _stamp(cfg)
    reusable = ((run / "summary.json").is_file() and stamp_file.is_file()
                and json.loads(stamp_file.read_text()) == wanted)
    if reusable:
        print(f"loading the shared run {shown(run)} (delete the folder to train it again)")
    else:
        if run.exists():            # made by another config or other miniclip code: start afresh
            shutil.rmtree(run)
        length = (f"{cfg.steps} steps" if cfg.steps else f"{cfg.epochs:g} epochs" if cfg.epochs
                  else f"{cfg.time_budget:g} minutes")
        print(f"training {shown(run)}: {length} of the '{cfg.model}' config, batch {cfg.batch_size} "
              f"(saved, and loaded next time)")
        train(cfg, progress=progress)
        stamp_file.write_text(json.dumps(wanted, indent=1))
    model, tokenizer, meta = model_from_checkpoint(run / "checkpoint.npz")
    summary = json.loads((run / "summary.json").read_text())
    losses = [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
              if "loss" in r]
    print(f"{meta['step']} steps, {summary['wall_seconds'] / 60:.1f} min of training, "
          f"last logged batch loss {losses[-1]:.3f}" if losses else "")
    return model, tokenizer, meta, run


# ---- small experiments (lessons 13 to 15) ---------------------------------------

def small_run(steps, batch_size, seed=0, loss="clip", temperature=None, learn_temperature=True,
              objective=None, train_size=2000, lr=2e-3, eval_images=500):
    """Train the `micro` CLIP on the captioned shapes for a few steps, in the loop of lesson 07 with
    the course's recipe (AdamW, no weight decay on logit_scale or the bias, gradient clipping at 1,
    the clamp of the temperature; a constant learning rate and one caption per image as its only
    positive, to keep it short), and measure zero-shot colour and shape on held-out test images.

    loss: "clip" or "siglip" (the model gets SigLIP's bias). temperature: the starting τ (None: the
    loss's default); learn_temperature=False holds it there (as --fixed-temperature does).
    objective(logits_per_image, logits_per_text, rng) -> loss Tensor replaces the loss (lesson 14
    uses it to hide negatives); rng is the run's own generator.
    Returns {"loss": [per step], "temperature": [per step], "bias": [per step, SigLIP],
    "colour": zero-shot top-1, "shape": zero-shot top-1, "model": the trained model}.
    """
    import numpy as np

    from miniclip.data.shapes import ShapesDataset, zero_shot_tasks
    from miniclip.data.transforms import normalize_batch
    from miniclip.evaluate import encode_images, zero_shot_accuracy, zero_shot_classifier
    from miniclip.loss import clip_loss, siglip_loss
    from miniclip.model import CLIP, get_config
    from miniclip.optim import AdamW, clamp_logit_scale, clip_grad_norm, param_groups_for_weight_decay
    from miniclip.tokenizer import Tokenizer, tokenize

    tokenizer = Tokenizer.default()
    config = dataclasses.replace(get_config("micro"), vocab_size=len(tokenizer), loss=loss,
                                 init_logit_scale=None if temperature is None else float(np.log(1 / temperature)))
    model = CLIP(config, seed=seed)
    model.logit_scale.requires_grad = learn_temperature
    optimizer = AdamW(param_groups_for_weight_decay(model, 0.1), lr=lr, betas=(0.9, 0.98), eps=1e-6,
                      weight_decay=0.1)
    data = ShapesDataset("train", size=train_size)
    images = normalize_batch(data.arrays())                           # (n, 3, 32, 32)
    rng = np.random.default_rng(seed)
    curves = {"loss": [], "temperature": [], "bias": []}
    for _ in range(steps):
        batch = rng.choice(train_size, batch_size, replace=False)
        ids = tokenize(data.captions(batch, rng), config.context_length, truncate=True, tokenizer=tokenizer)
        logits_per_image, logits_per_text = model(images[batch], ids)     # (B, B) each
        if objective is not None:
            value = objective(logits_per_image, logits_per_text, rng)
        elif loss == "siglip":
            value = siglip_loss(logits_per_image)
        else:
            value = clip_loss(logits_per_image, logits_per_text)
        optimizer.zero_grad()
        value.backward()
        clip_grad_norm(model.parameters(), 1.0)
        optimizer.step()
        clamp_logit_scale(model)                                          # τ stays in [0.01, 1]
        curves["loss"].append(value.item())
        curves["temperature"].append(float(np.exp(-model.logit_scale.item())))
        if loss == "siglip":
            curves["bias"].append(model.logit_bias.item())
    test = ShapesDataset("test", size=eval_images)
    features = encode_images(model, test.arrays())
    tasks = zero_shot_tasks()
    for attribute in ("colour", "shape"):
        classifier = zero_shot_classifier(model, *tasks[attribute], tokenizer)
        curves[attribute] = zero_shot_accuracy(features, test.labels(attribute), classifier)["top1"]
    curves["model"] = model
    return curves
