"""SigLIP's ring (miniclip/distributed/ring.py): on 2 ranks, the global batch's loss and gradients;
in training (ContrastiveStep, `mpiexec -n 2 python -m miniclip train --loss siglip`), one process's run."""
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from miniclip.autograd.tensor import Tensor
from miniclip.config import get_config
from miniclip.distributed import Communicator, ContrastiveStep, communicator
from miniclip.distributed.ring import ring_accuracy, ring_siglip_loss
from miniclip.loss import batch_accuracy, siglip_loss
from miniclip.model import CLIP
from test_distributed import (assert_same_parameters, assert_same_run, assert_same_step, needs_mpi,
                              run_mpi, run_python)

sys.path.insert(0, str(Path(__file__).parent))
import distributed_worker                                             # noqa: E402
import siglip_ring_worker as worker                                   # noqa: E402

WORKER = Path(__file__).parent / "siglip_ring_worker.py"
DISTRIBUTED_WORKER = Path(__file__).parent / "distributed_worker.py"


def one_process_reference():
    """The global batch's SigLIP loss on one process, and its gradients (float64)."""
    image, text, t, b = worker.fixed_features()
    image, text = Tensor(image, requires_grad=True), Tensor(text, requires_grad=True)
    t, b = Tensor(np.float64(t), requires_grad=True), Tensor(np.float64(b), requires_grad=True)
    loss = siglip_loss(t.exp() * (image @ text.T) + b)
    loss.backward()
    tied_image, tied_text = worker.tied_features()
    return {"loss": loss.data, "grad_image": image.grad, "grad_text": text.grad,
            "grad_t": t.grad, "grad_b": b.grad,
            "accuracy": np.array(batch_accuracy(tied_image @ tied_text.T))}   # argmax: first of ties


def test_the_tied_features_make_argmax_choose():
    """Images 1, 2 and caption 0 tie with a copy later in the batch and are right (argmax takes
    the first); images 3-5 and captions 3-5 lose to an earlier copy: 3/6 each way (1/6 if a
    tie counted as wrong)."""
    assert one_process_reference()["accuracy"].tolist() == [0.5, 0.5]


def assert_same(a, b, tol=1e-12):
    for key in b:
        scale = max(np.abs(b[key]).max(), 1e-30)
        assert np.abs(np.asarray(a[key]) - b[key]).max() <= tol * scale, key


def test_the_ring_on_one_process_is_the_plain_loss(tmp_path):
    worker.main(tmp_path / "one.npz")
    with np.load(tmp_path / "one.npz") as f:
        assert_same(dict(f), one_process_reference())
    assert communicator().world_size == 1


@needs_mpi
@pytest.mark.parametrize("ranks", [2, 3])     # 3: the ring's two directions differ (on 2 they coincide)
def test_several_ranks_give_the_global_batch_loss_and_gradients_float64(tmp_path, ranks):
    run_mpi(ranks, WORKER, tmp_path / "ring.npz")
    with np.load(tmp_path / "ring.npz") as f:
        assert_same(dict(f), one_process_reference())


# ---- the ring in training: ContrastiveStep and `python -m miniclip train --loss siglip` -----------

def test_ring_accuracy_is_batch_accuracy_on_one_process():
    rng = np.random.default_rng(1)
    image, text = rng.standard_normal((7, 5)), rng.standard_normal((7, 5))
    text[:3] = image[:3] + 0.1 * text[:3]                          # a few pairs that match
    assert ring_accuracy(image, text, communicator()) == batch_accuracy(image @ text.T)


def test_the_ring_takes_positives_from_other_ranks_columns():
    """positives (b, N): block k uses the columns of rank (r − k) mod W; on one rank, all of them."""
    image, text, t, b = worker.fixed_features()
    labels = np.eye(6)
    labels[0, 3] = labels[3, 0] = 1                                  # pairs 0 and 3 mean the same
    logits = lambda: Tensor(np.float64(t)).exp() * (Tensor(image) @ Tensor(text).T) + b   # noqa: E731
    expected = siglip_loss(logits(), positives=labels).item()
    got, _ = ring_siglip_loss(Tensor(image), Tensor(text), Tensor(np.float64(t)), Tensor(np.float64(b)),
                              communicator(), positives=labels)
    assert abs(got.item() - expected) <= 1e-12 * abs(expected)


def siglip_step(accum_freq, use_positives):
    model = CLIP(dataclasses.replace(get_config("micro"), loss="siglip"), seed=0).astype(np.float64)
    images, ids, groups = distributed_worker.fixed_batch(model.config)
    result = ContrastiveStep(model, Communicator(), accum_freq)(images, ids, groups if use_positives else None)
    return result, {name: np.array(p.grad) for name, p in model.named_parameters()}


@pytest.mark.parametrize("accum_freq, use_positives", [(2, False), (4, True)])
def test_gradient_caching_gives_siglips_big_batch_gradient_float64(accum_freq, use_positives):
    big, big_grads = siglip_step(1, use_positives)
    cached, cached_grads = siglip_step(accum_freq, use_positives)
    assert abs(cached.loss - big.loss) <= 1e-12 * big.loss
    assert (cached.acc_i2t, cached.acc_t2i) == (big.acc_i2t, big.acc_t2i)
    assert len(big_grads) == 63 and abs(big_grads["logit_bias"]) > 0
    for name, g in big_grads.items():
        assert np.abs(cached_grads[name] - g).max() <= 1e-12 * np.abs(g).max(), name


def test_one_process_step_is_the_siglip_loss_of_the_model():
    model = CLIP(dataclasses.replace(get_config("micro"), loss="siglip"), seed=0).astype(np.float64)
    images, ids, groups = distributed_worker.fixed_batch(model.config)
    labels = (groups[:, None] == groups[None, :]).astype(np.float64)
    expected = siglip_loss(model(images, ids)[0], positives=labels).item()
    assert ContrastiveStep(model, Communicator())(images, ids, groups).loss == pytest.approx(expected, rel=1e-12)


@needs_mpi
@pytest.mark.parametrize("options", [[], ["--positives"], ["--positives", "--accum-freq", "2"]],
                         ids=["plain", "positives", "positives-accum2"])
def test_two_ranks_give_siglips_big_batch_gradient_float64(tmp_path, options):
    run_mpi(2, DISTRIBUTED_WORKER, "step", tmp_path / "two.npz", "--loss", "siglip", *options)
    two = dict(np.load(tmp_path / "two.npz"))
    assert int(two["world_size"]) == 2
    result, grads, params = distributed_worker.one_step(Communicator(), 1, "--positives" in options,
                                                        loss="siglip")
    assert_same_step(two, {"loss": result.loss, **{f"grad/{k}": v for k, v in grads.items()}},
                     1e-12, count=63)
    assert (float(two["acc_i2t"]), float(two["acc_t2i"])) == (result.acc_i2t, result.acc_t2i)
    assert_same_parameters({k[len("param/"):]: v for k, v in two.items() if k.startswith("param/")},
                           params, 1e-12, count=63)


@pytest.fixture(scope="module")
def one_process_siglip_run(tmp_path_factory):
    """The reference: one process, 20 steps of 16 pairs with SigLIP's loss (float32)."""
    out = tmp_path_factory.mktemp("one")
    run_python(DISTRIBUTED_WORKER, "train", out, "one", "--loss", "siglip")
    return out / "one"


def test_gradient_caching_trains_siglip_like_the_big_batch(one_process_siglip_run, tmp_path):
    run_python(DISTRIBUTED_WORKER, "train", tmp_path, "accum2", "--accum-freq", "2", "--loss", "siglip")
    assert_same_run(tmp_path / "accum2", one_process_siglip_run, count=63)


@needs_mpi
def test_two_ranks_train_siglip_like_one_process(one_process_siglip_run, tmp_path):
    """`mpiexec -n 2 python -m miniclip train --loss siglip`: the ring gives one process's run."""
    done = run_mpi(2, "-m", "miniclip", "train", "--model", "micro", "--steps", "20", "--loss", "siglip",
                   "--batch-size", "16", "--lr", "1e-3", "--train-size", "256", "--log-every", "1",
                   "--eval-every", str(10**9), "--out", tmp_path, "--name", "two", "--no-progress")
    assert done.stdout.count("zero-shot accuracy") == 1
    assert_same_run(tmp_path / "two", one_process_siglip_run, count=63)
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["loss_type"] == "siglip"
