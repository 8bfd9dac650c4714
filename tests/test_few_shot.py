"""Few-shot linear probes (CLIP paper Figure 6): seeded draws, held-out l2, separable features."""
import numpy as np

from miniclip.evaluate import few_shot_indices, few_shot_probe, linear_probe


def separable(n_per_class, classes=4, dim=8, seed=0):
    """Features clustered tightly around one random unit direction per class."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    labels = np.repeat(np.arange(classes), n_per_class)
    x = centres[labels] + 0.05 * rng.normal(size=(len(labels), dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True), labels


def test_draws_reproducible_by_seed_and_k_per_class():
    labels = np.random.default_rng(1).integers(0, 5, size=200)
    a = few_shot_indices(labels, 4, seed=3, draw=2)
    assert np.array_equal(a, few_shot_indices(labels, 4, seed=3, draw=2))
    assert not np.array_equal(a, few_shot_indices(labels, 4, seed=3, draw=1))
    assert not np.array_equal(a, few_shot_indices(labels, 4, seed=4, draw=2))
    assert np.array_equal(np.bincount(labels[a], minlength=5), [4] * 5)
    assert len(np.unique(a)) == len(a)
    assert np.array_equal(few_shot_indices(labels, None, 0, 0), np.arange(200))


def test_k_shot_on_separable_features_is_accurate_and_spread_reported():
    x, y = separable(60)
    tx, ty = separable(30, seed=0)
    tx, ty = tx[1::2], ty[1::2]
    result = few_shot_probe(x, y, tx, ty, shots=(1, 4, None), draws=3, steps=200)
    for k in (1, 4, None):
        assert result[k]["mean"] > 0.95, (k, result[k])
    assert len(result[1]["accuracies"]) == 3 and len(result[None]["accuracies"]) == 1
    assert result[1]["std"] == np.std(result[1]["accuracies"])
    again = few_shot_probe(x, y, tx, ty, shots=(1,), draws=3, steps=200)
    assert again[1] == result[1]


def test_draws_come_from_training_examples_only(monkeypatch):
    """The fitted rows are training rows outside the held-out part, never test rows."""
    import miniclip.evaluate as ev
    x, y = separable(20)
    test_x = x[:8] + 10.0                      # test rows are recognisable by their size
    seen = []
    real = ev._fit_logistic

    def spy(features, labels, *args):
        seen.append(features)
        return real(features, labels, *args)
    monkeypatch.setattr(ev, "_fit_logistic", spy)
    few_shot_probe(x, y, test_x, y[:8], shots=(2,), draws=2, steps=20)
    rows = {tuple(r) for r in x}
    for features in seen:
        assert all(tuple(r) in rows for r in features)
        assert np.abs(features).max() < 2.0


def test_regularisation_never_sees_test_labels():
    rng = np.random.default_rng(0)
    x, y = separable(30, dim=4)
    x = x + 0.6 * rng.normal(size=x.shape)     # noisy: the l2 choice matters
    tx, ty = separable(20, dim=4, seed=1)
    shuffled = rng.permutation(ty)
    grid = (1e-4, 1e-2, 1.0)
    a = few_shot_probe(x, y, tx, ty, shots=(2, 8), draws=3, l2_grid=grid, steps=100)
    b = few_shot_probe(x, y, tx, shuffled, shots=(2, 8), draws=3, l2_grid=grid, steps=100)
    assert [a[k]["l2"] for k in (2, 8)] == [b[k]["l2"] for k in (2, 8)]
    assert linear_probe(x, y, tx, ty, l2_grid=grid, steps=100)["l2"] == \
        linear_probe(x, y, tx, shuffled, l2_grid=grid, steps=100)["l2"]


def micro_checkpoint(path):
    import dataclasses
    from miniclip.checkpoint import save_checkpoint
    from miniclip.config import get_config
    from miniclip.model import CLIP
    from miniclip.tokenizer import Tokenizer
    tokenizer = Tokenizer.default()
    model = CLIP(dataclasses.replace(get_config("micro"), vocab_size=len(tokenizer)), seed=0)
    save_checkpoint(path, model, meta={"config": {"dataset": "shapes", "seed": 0},
                                       "model": dataclasses.asdict(model.config),
                                       "tokenizer_merges": tokenizer.merges})
    return path


def test_cli_few_shot_prints_the_curve_beside_zero_shot_and_plots(tmp_path, capsys):
    from miniclip.cli import main
    checkpoint = micro_checkpoint(tmp_path / "run" / "checkpoint.npz")
    assert main(["eval", "--checkpoint", str(checkpoint), "--few-shot", "1,4,all",
                 "--probe-train-size", "300", "--draws", "2"]) == 0
    out = capsys.readouterr().out
    lines = out[out.index("few-shot linear probe on shapes"):].splitlines()
    assert lines[1].split()[0] == "zero-shot" and "(test/shape)" in lines[1]
    assert [line.split()[0] for line in lines[2:5]] == ["1-shot", "4-shot", "all"]
    assert all("±" in line for line in lines[2:5])
    plot = tmp_path / "run" / "few_shot_shapes.png"          # beside the checkpoint
    assert lines[5] == f"plot: {plot}" and plot.read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in plot.parent.iterdir() if p.name.endswith(".tmp")]


def test_cli_few_shot_refuses_a_bad_count(tmp_path, capsys):
    from miniclip.cli import main
    checkpoint = micro_checkpoint(tmp_path / "checkpoint.npz")
    assert main(["eval", "--checkpoint", str(checkpoint), "--few-shot", "1,0"]) == 2
    assert "--few-shot '1,0': '0' is not a count" in capsys.readouterr().err


def test_probe_data_draws_training_images_of_every_class(monkeypatch):
    """An image-folder CIFAR archive lists its training images class by class: the probe's
    10,000 must be drawn across them, not the first 10,000 (two classes of ten)."""
    import miniclip.data.cifar as cifar
    from miniclip.tasks import probe_data
    labels = np.repeat(np.arange(10), 5000)                       # sorted by class, as on disk
    images = np.zeros((50000, 2, 2, 3), np.uint8)
    images[:, 0, 0, 0] = labels                                    # each image knows its class
    monkeypatch.setattr(cifar, "load_cifar", lambda name, split: (
        (images, labels, [str(c) for c in range(10)]) if split == "train"
        else (images[:100], labels[:100], None)))
    train, train_labels, *_ = probe_data("cifar10", seed=0, image_size=32, train_size=10000)
    assert len(train_labels) == 10000 and set(train_labels.tolist()) == set(range(10))
    assert np.bincount(train_labels).min() > 800                   # about 1,000 of each class
    assert (train[:, 0, 0, 0] == train_labels).all()              # images and labels stay paired
    again, again_labels, *_ = probe_data("cifar10", seed=0, image_size=32, train_size=10000)
    assert (again_labels == train_labels).all()                    # the draw is the seed's


def test_cifar_periodic_evaluation_samples_every_class(monkeypatch):
    """train's periodic evaluation scores `limit` test images: on a class-sorted image-folder
    archive they must be a sample of all classes, not the first `limit` (all airplanes)."""
    import miniclip.data.cifar as cifar
    from miniclip import tasks
    labels = np.repeat(np.arange(10), 1000)                        # the test split, class by class
    images = np.zeros((10000, 32, 32, 3), np.uint8)
    monkeypatch.setattr(cifar, "load_cifar", lambda name, split: (images, labels, [str(c) for c in range(10)]))
    scored = {}

    def fake_accuracy(features, scored_labels, classifier):
        scored["labels"] = np.asarray(scored_labels)
        return {"top1": 0.0, "top5": 0.0, "per_class": np.zeros(10)}
    monkeypatch.setattr(tasks, "zero_shot_accuracy", fake_accuracy)
    monkeypatch.setattr(tasks, "zero_shot_classifier", lambda *args: None)
    monkeypatch.setattr(tasks, "encode_images", lambda model, x, preprocess=None: np.zeros((len(x), 4)))
    task = tasks.cifar_task("cifar10", train=False)
    task.evaluate(None, None, limit=1000)
    counts = np.bincount(scored["labels"], minlength=10)
    assert counts.sum() == 1000 and counts.min() > 60              # about 100 of each class
    task.evaluate(None, None)
    assert (scored["labels"] == labels).all()                      # the final evaluation: all of them
