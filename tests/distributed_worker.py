"""Run by tests/test_distributed.py under `mpiexec -n W` (the functions also run in-process, W = 1).

    mpiexec -n 2 python tests/distributed_worker.py step OUT.npz [--accum-freq K] [--positives] [--diverge] [--loss siglip]
    mpiexec -n 2 python tests/distributed_worker.py train OUT_FOLDER NAME [--stop-after K] [--accum-freq K] [--resume] [--loss siglip]
    mpiexec -n 2 python tests/distributed_worker.py fail

step:  one float64 training step of the micro CLIP on a fixed global batch, through
       miniclip.distributed: every rank takes its rows, the loss is gathered, the gradients
       averaged. Rank 0 writes the loss, the gradients and the parameters after one AdamW
       step to OUT.npz; every rank checks that its parameters equal rank 0's (--diverge:
       rank 1 changes one first, and the check must stop the run). --loss siglip: a
       SigLIP model (its loss goes round the ring instead of gathering).
train: the test suite's small shapes run (train_config below) through miniclip.train.train;
       --stop-after K: Ctrl-C on rank 0 only, during step K (the run must stop on every rank
       after that step and write a checkpoint).
"""
import argparse
import dataclasses
import signal

import numpy as np

from miniclip.distributed import (ContrastiveStep, batch_rows, broadcast_parameters,
                                  check_parameters_identical, communicator)
from miniclip.config import get_config
from miniclip.model import CLIP
from miniclip.optim import AdamW

GLOBAL_BATCH = 8


def fixed_batch(config, seed=0):
    """A global batch of GLOBAL_BATCH random images and token ids (float64), and groups."""
    rng = np.random.default_rng(seed)
    R, C = config.image_resolution, config.context_length
    images = rng.standard_normal((GLOBAL_BATCH, 3, R, R))
    ids = rng.integers(1, config.vocab_size - 1, size=(GLOBAL_BATCH, C))
    ids[:, -1] = config.vocab_size - 1                       # end-of-text: the largest id
    groups = np.array([0, 1, 2, 0, 3, 1, 4, 5])              # a few pairs share a meaning
    return images, ids, groups


def one_step(comm, accum_freq=1, use_positives=False, dtype=np.float64, diverge=False, loss="clip"):
    model = CLIP(dataclasses.replace(get_config("micro"), loss=loss), seed=0).astype(dtype)
    broadcast_parameters(model, comm)
    optimizer = AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1)
    images, ids, groups = fixed_batch(model.config)
    rows = batch_rows(GLOBAL_BATCH, comm, accum_freq)
    step = ContrastiveStep(model, comm, accum_freq)
    optimizer.zero_grad()
    result = step(images[rows], ids[rows], groups[rows] if use_positives else None)
    grads = {name: np.array(p.grad) for name, p in model.named_parameters()}
    optimizer.step()
    if diverge and comm.rank == 1:
        model.logit_scale.data += 1e-6                       # a rank that drifted
    check_parameters_identical(model, comm, step=1)
    params = {name: np.array(p.data) for name, p in model.named_parameters()}
    return result, grads, params


def train_config(out, name, **overrides):
    """20 steps of the micro CLIP on 256 shapes, batch 16, a loss logged every step."""
    from miniclip.train import TrainConfig
    settings = dict(dataset="shapes", model="micro", steps=20, batch_size=16, lr=1e-3,
                    out=str(out), name=name, train_size=256, log_every=1, eval_every=10**9,
                    checkpoint_every=10**9, device="cpu")
    return TrainConfig(**{**settings, **overrides})


def stop_during_step(k, rank_that_stops=0):
    """Press Ctrl-C (on one rank) while step k runs, by wrapping the gradient clipping."""
    from miniclip import train as train_module
    real, calls = train_module.clip_grad_norm, {"n": 0}

    def clip(params, max_norm):
        calls["n"] += 1
        if calls["n"] == k and train_module.distributed.communicator().rank == rank_that_stops:
            signal.raise_signal(signal.SIGINT)
        return real(params, max_norm)

    train_module.clip_grad_norm = clip


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("step")
    s.add_argument("out")
    s.add_argument("--accum-freq", type=int, default=1)
    s.add_argument("--positives", action="store_true")
    s.add_argument("--diverge", action="store_true", help="rank 1 changes a parameter")
    s.add_argument("--loss", default="clip")
    t = sub.add_parser("train")
    t.add_argument("out")
    t.add_argument("name")
    t.add_argument("--accum-freq", type=int, default=1)
    t.add_argument("--stop-after", type=int)
    t.add_argument("--resume", action="store_true")
    t.add_argument("--loss", default="clip")
    sub.add_parser("fail", help="rank 0 raises while rank 1 waits in a collective")
    args = parser.parse_args()
    if args.what == "fail":
        comm = communicator(distributed=True)
        with comm.abort_on_error():
            if comm.rank == 0:
                raise ValueError("something went wrong on rank 0 alone")
            comm.all_reduce_mean(np.ones(3))         # would wait for rank 0 forever
        return
    if args.what == "train":
        from miniclip.train import train
        if args.stop_after:
            stop_during_step(args.stop_after)
        train(train_config(args.out, args.name, accum_freq=args.accum_freq, loss=args.loss),
              resume=args.resume, progress=False)
        return
    comm = communicator(distributed=True)
    result, grads, params = one_step(comm, args.accum_freq, args.positives, diverge=args.diverge,
                                     loss=args.loss)
    if comm.rank == 0:
        np.savez(args.out, loss=result.loss, acc_i2t=result.acc_i2t, acc_t2i=result.acc_t2i,
                 world_size=comm.world_size,
                 **{f"grad/{k}": v for k, v in grads.items()},
                 **{f"param/{k}": v for k, v in params.items()})


if __name__ == "__main__":
    main()
