"""Data parallel over MPI and gradient caching: the numbers are those of one big batch.

The MPI tests start `mpiexec -n 2` in a subprocess (tests/distributed_worker.py) and skip,
saying why, when the `distributed` extra (mpi4py + an MPI) is not installed.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import miniclip.functional as F
from miniclip import Tensor, no_grad
from miniclip.autograd import gradcheck
from miniclip.checkpoint import load_checkpoint
from miniclip.data.loader import DataLoader
from miniclip.distributed import (Communicator, ContrastiveStep, batch_rows, communicator,
                                  gathered_clip_loss, launched_world_size, positives_rows)
from miniclip.loss import clip_loss
from miniclip.model import CLIP

sys.path.insert(0, str(Path(__file__).parent))
import distributed_worker as worker  # noqa: E402

WORKER = Path(__file__).parent / "distributed_worker.py"


# ---- one process ---------------------------------------------------------------------------

def test_single_process_collectives_are_the_identity():
    comm = Communicator()
    x = np.arange(6.0).reshape(3, 2)
    for op in (comm.all_gather, comm.reduce_scatter_sum, comm.all_reduce_mean,
               comm.all_reduce_max, comm.broadcast):
        assert np.array_equal(op(x), x)
    assert comm.rank == 0 and comm.world_size == 1 and comm.is_main
    assert comm.all_gather_object("a") == ["a"]


def test_launcher_is_detected_from_the_environment():
    assert launched_world_size({}) == 1
    assert launched_world_size({"PMI_SIZE": "4"}) == 4
    assert launched_world_size({"OMPI_COMM_WORLD_SIZE": "2"}) == 2
    assert isinstance(communicator(None, environ={}), Communicator)
    with pytest.raises(RuntimeError, match="same run folder"):
        communicator(False, environ={"PMI_SIZE": "2"})


def test_missing_mpi4py_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)          # `import mpi4py` fails
    with pytest.raises(RuntimeError, match=r"started 2 processes.*pip install"):
        communicator(None, environ={"PMI_SIZE": "2"})
    with pytest.raises(RuntimeError, match="distributed"):
        communicator(True, environ={})


def test_indivisible_batches_are_refused():
    class Two(Communicator):
        rank, world_size = 1, 2
    assert batch_rows(8, Two()) == slice(4, 8)
    with pytest.raises(ValueError, match="does not split over 2 processes"):
        batch_rows(7, Two())
    with pytest.raises(ValueError, match="accum_freq=3"):
        batch_rows(8, Two(), accum_freq=3)
    with pytest.raises(ValueError, match="accum_freq=0"):
        batch_rows(8, Two(), accum_freq=0)


def test_loader_rows_are_those_of_the_whole_batch():
    from miniclip.data.shapes import ShapesDataset
    from miniclip.tokenizer import Tokenizer, tokenize
    data, tokenizer = ShapesDataset("train", size=64), Tokenizer.default()
    make = lambda rows: DataLoader(                                          # noqa: E731
        data.arrays(), data.captions, lambda t: tokenize(t, 16, truncate=True, tokenizer=tokenizer),
        8, augment=True, prefetch=False, rows=rows)
    whole = list(make(None).iter_epoch(1))
    halves = [list(make(slice(r * 4, (r + 1) * 4)).iter_epoch(1)) for r in (0, 1)]
    for k, (x, ids, idx) in enumerate(whole):
        for part, (x_r, ids_r, idx_r) in zip((slice(0, 4), slice(4, 8)), (h[k] for h in halves)):
            assert np.array_equal(x[part], x_r) and np.array_equal(ids[part], ids_r)
            assert np.array_equal(idx[part], idx_r)


def micro64(seed=0):
    return CLIP("micro", seed=seed).astype(np.float64)


def test_gathered_loss_on_one_process_is_the_clip_loss():
    model = micro64()
    images, ids, groups = worker.fixed_batch(model.config)
    comm = Communicator()
    same = (groups[:, None] == groups[None, :]).astype(np.float64)
    for positives in (None, same / same.sum(axis=1, keepdims=True)):
        logits_per_image, logits_per_text = model(images, ids)
        expected = clip_loss(logits_per_image, logits_per_text, positives).item()
        image_f = F.normalize(model.encode_image(images), axis=-1)
        text_f = F.normalize(model.encode_text(ids), axis=-1)
        got, *_ = gathered_clip_loss(image_f, text_f, model.logit_scale, comm, positives)
        assert abs(got.item() - expected) < 1e-12 * abs(expected)


def test_positives_rows_are_rows_of_the_whole_matrix():
    groups = np.array([0, 1, 0, 2, 1, 0])
    same = (groups[:, None] == groups[None, :]).astype(np.float32)
    whole = same / same.sum(axis=1, keepdims=True)
    assert np.array_equal(positives_rows(groups[2:4], groups, np), whole[2:4])


def test_all_gather_and_local_loss_pass_gradcheck():
    rng = np.random.default_rng(0)
    image = Tensor(rng.standard_normal((4, 5)), requires_grad=True)
    text = Tensor(rng.standard_normal((4, 5)), requires_grad=True)
    scale = Tensor(np.array(1.3), requires_grad=True)
    comm = Communicator()
    assert gradcheck(lambda i, t, s: gathered_clip_loss(i, t, s, comm)[0], image, text, scale)


def step_gradients(model, images, ids, groups, accum_freq):
    for p in model.parameters():
        p.grad = None
    result = ContrastiveStep(model, Communicator(), accum_freq)(images, ids, groups)
    return result, {name: np.array(p.grad) for name, p in model.named_parameters()}


@pytest.mark.parametrize("accum_freq, use_groups", [(2, False), (4, True)])
def test_gradient_caching_gives_the_big_batch_gradient_float64(accum_freq, use_groups):
    model = micro64()
    images, ids, groups = worker.fixed_batch(model.config)
    groups = groups if use_groups else None
    big, big_grads = step_gradients(model, images, ids, groups, 1)
    cached, cached_grads = step_gradients(model, images, ids, groups, accum_freq)
    assert abs(cached.loss - big.loss) <= 1e-12 * big.loss
    assert (cached.acc_i2t, cached.acc_t2i) == (big.acc_i2t, big.acc_t2i)
    for name, g in big_grads.items():
        assert np.abs(cached_grads[name] - g).max() <= 1e-12 * np.abs(g).max(), name


def test_gradient_caching_keeps_no_graph_between_chunks():
    """The first pass holds no activations: the features it returns have no graph."""
    model = micro64()
    images, ids, _ = worker.fixed_batch(model.config)
    with no_grad():
        features = model.encode_image(images)
    assert features.grad_fn is None and not features.requires_grad


# ---- two ranks over MPI ------------------------------------------------------------------------

def mpiexec():
    """The mpiexec of this Python's environment (the distributed extra installs it there)."""
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


needs_mpi = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or mpiexec() is None,
    reason="the distributed extra is not installed (pip install -e \".[distributed]\": "
           "mpi4py and MPICH); CI installs it")


def run_python(*args, ranks=None, timeout=300):
    """python ARGS in a subprocess (under `mpiexec -n ranks` if given), one BLAS thread each:
    on a busy machine BLAS threads waiting on each other cost far more than they bring."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MINICLIP_DEVICE": "cpu"}
    launcher = [mpiexec(), "-n", str(ranks)] if ranks else []
    done = subprocess.run(launcher + [sys.executable, *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def run_mpi(n, *args):
    return run_python(*args, ranks=n)


def assert_same_parameters(a, b, tol, count=62):
    """Every parameter tensor: ‖a − b‖ ≤ tol ‖b‖ — except the attention key biases.

    The key bias has no effect on attention (q·(k + b_k) adds q·b_k to a whole row of scores,
    and softmax ignores that), so its true gradient is exactly 0 and its computed one is
    rounding noise, different for any two summation orders; AdamW divides by √v and turns
    that noise into steps of up to lr. Both runs' key biases stay at noise level.
    """
    assert sorted(a) == sorted(b) and len(b) == count         # micro: 62 (SigLIP's: 63, with logit_bias)
    for name, value in b.items():
        mine, theirs = np.asarray(a[name]), np.asarray(value)
        if name.endswith("attn.in_proj_bias"):              # rows: q | k | v -> q and v only
            mine, theirs = mine.reshape(3, -1)[[0, 2]], theirs.reshape(3, -1)[[0, 2]]
        assert np.linalg.norm(mine - theirs) <= tol * np.linalg.norm(theirs), name


def assert_same_step(a, b, tol, count=62):
    """a, b: {'loss': float, 'grad/<name>': array}; equal to `tol`, relative."""
    assert abs(float(a["loss"]) - float(b["loss"])) <= tol * abs(float(b["loss"]))
    names = [key for key in b if key.startswith("grad/")]
    assert len(names) == len([key for key in a if key.startswith("grad/")]) == count
    for key in names:
        assert np.abs(a[key] - b[key]).max() <= tol * np.abs(b[key]).max(), key


@needs_mpi
@pytest.mark.parametrize("options", [[], ["--positives"], ["--positives", "--accum-freq", "2"]],
                         ids=["plain", "positives", "positives-accum2"])
def test_two_ranks_give_the_big_batch_gradient_float64(tmp_path, options):
    run_mpi(2, WORKER, "step", tmp_path / "two.npz", *options)
    two = dict(np.load(tmp_path / "two.npz"))
    assert int(two["world_size"]) == 2
    result, grads, params = worker.one_step(Communicator(), 1, "--positives" in options)
    assert_same_step(two, {"loss": result.loss, **{f"grad/{k}": v for k, v in grads.items()}},
                     1e-12)
    assert float(two["acc_i2t"]) == result.acc_i2t
    assert_same_parameters({k[len("param/"):]: v for k, v in two.items() if k.startswith("param/")},
                           params, 1e-12)


@needs_mpi
def test_ranks_whose_parameters_differ_are_stopped(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MINICLIP_DEVICE": "cpu"}
    done = subprocess.run([mpiexec(), "-n", "2", sys.executable, str(WORKER), "step",
                           str(tmp_path / "x.npz"), "--diverge"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode != 0
    assert "the parameters of rank(s) [1] differ from rank 0's" in done.stderr


@needs_mpi
def test_an_error_on_one_rank_ends_every_rank():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MINICLIP_DEVICE": "cpu"}
    done = subprocess.run([mpiexec(), "-n", "2", sys.executable, str(WORKER), "fail"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode != 0, done.stderr
    assert "error on rank 0 of 2: something went wrong on rank 0 alone" in done.stderr, \
        f"rc {done.returncode}; stdout: {done.stdout[-2000:]}; stderr: {done.stderr[-2000:]}"


# ---- training runs: 2 ranks x 8 rows against 1 process x 16 -------------------------------------

def run_losses(run):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def run_parameters(run):
    return load_checkpoint(run / "checkpoint.npz")["params"]


def assert_same_run(run, reference, tol=1e-5, steps=range(1, 21), count=62):
    a, b = run_losses(run), run_losses(reference)
    assert sorted(a) == sorted(b) == list(steps)
    for step in steps:
        assert abs(a[step] - b[step]) <= tol * b[step], (step, a[step], b[step])
    assert_same_parameters(run_parameters(run), run_parameters(reference), tol, count)


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory):
    """The reference: one process, 20 steps of 16 pairs (float32)."""
    out = tmp_path_factory.mktemp("one")
    run_python(WORKER, "train", out, "one")
    return out / "one"


def test_gradient_caching_trains_like_the_big_batch(one_process_run, tmp_path):
    run_python(WORKER, "train", tmp_path, "accum2", "--accum-freq", "2")
    assert_same_run(tmp_path / "accum2", one_process_run)
    summary = json.loads((tmp_path / "accum2" / "summary.json").read_text())
    assert summary["accum_freq"] == 2 and summary["processes"] == 1


@needs_mpi
def test_two_ranks_train_like_one_process(one_process_run, tmp_path):
    """`mpiexec -n 2 python -m miniclip train`: the same losses and parameters, rank 0 alone reports."""
    done = run_mpi(2, "-m", "miniclip", "train", "--model", "micro", "--steps", "20",
                   "--batch-size", "16", "--lr", "1e-3", "--train-size", "256", "--log-every", "1",
                   "--eval-every", str(10**9), "--out", tmp_path, "--name", "two", "--no-progress")
    assert done.stdout.count("zero-shot accuracy") == 1            # printed by rank 0 only
    run = tmp_path / "two"
    assert_same_run(run, one_process_run)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 20
    assert load_checkpoint(run / "checkpoint.npz")["meta"]["processes"] == 2


@needs_mpi
def test_a_run_stopped_on_two_ranks_resumes_on_one(one_process_run, tmp_path):
    """Ctrl-C on rank 0 only stops both ranks after that step; one process continues exactly."""
    run_mpi(2, WORKER, "train", tmp_path, "resumed", "--stop-after", "10")
    assert sorted(run_losses(tmp_path / "resumed")) == list(range(1, 11))
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.npz")["meta"]["step"] == 10
    run_python(WORKER, "train", tmp_path, "resumed", "--resume")
    assert_same_run(tmp_path / "resumed", one_process_run)
