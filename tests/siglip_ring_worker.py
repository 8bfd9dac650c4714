"""Run by tests/test_siglip_ring.py under `mpiexec -n W`: SigLIP's ring loss on fixed features.

    mpiexec -n 2 python tests/siglip_ring_worker.py OUT.npz

Every rank takes its rows of a fixed float64 global batch of features, computes
ring_siglip_loss and its backward; the rank-averaged loss and the gradients of the
global feature matrices (gathered in rank order), t and b land in OUT.npz, with
ring_accuracy on features whose scores tie (tied_features) averaged over ranks.
"""
import sys

import numpy as np

from miniclip.autograd.tensor import Tensor
from miniclip.distributed import communicator
from miniclip.distributed.ring import ring_accuracy, ring_siglip_loss

GLOBAL_BATCH, DIM = 6, 5


def fixed_features(seed=0):
    rng = np.random.default_rng(seed)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)      # noqa: E731
    return (unit(rng.standard_normal((GLOBAL_BATCH, DIM))), unit(rng.standard_normal((GLOBAL_BATCH, DIM))),
            np.log(10.0) + 0.3, -2.5)


def tied_features():
    """Features where argmax meets ties: captions 1 = 4 and 2 = 5 (twice the same text),
    image 0 = image 3; on 2 or 3 ranks the copies sit on different ranks."""
    rng = np.random.default_rng(1)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)      # noqa: E731
    image = unit(rng.standard_normal((GLOBAL_BATCH, DIM)))
    text = unit(image + 0.1 * rng.standard_normal((GLOBAL_BATCH, DIM)))  # each near its image
    text[4], text[5], image[3] = text[1], text[2], image[0]
    return image, text


def main(out):
    comm = communicator()
    image, text, t, b = fixed_features()
    local = GLOBAL_BATCH // comm.world_size
    rows = slice(comm.rank * local, (comm.rank + 1) * local)
    image_r, text_r = Tensor(image[rows], requires_grad=True), Tensor(text[rows], requires_grad=True)
    t, b = Tensor(np.float64(t), requires_grad=True), Tensor(np.float64(b), requires_grad=True)
    loss, _ = ring_siglip_loss(image_r, text_r, t, b, comm)
    loss.backward()
    # data-parallel training averages every gradient over ranks: do the same here
    mean = lambda x: comm.all_reduce_mean(np.ascontiguousarray(x))     # noqa: E731
    result = {"loss": mean(np.atleast_1d(loss.data))[0],
              "grad_image": comm.all_gather(image_r.grad * 1.0) / comm.world_size,
              "grad_text": comm.all_gather(text_r.grad * 1.0) / comm.world_size,
              "grad_t": mean(np.atleast_1d(t.grad))[0], "grad_b": mean(np.atleast_1d(b.grad))[0]}
    tied_image, tied_text = tied_features()
    result["accuracy"] = mean(np.array(ring_accuracy(tied_image[rows], tied_text[rows], comm)))
    if comm.is_main:
        np.savez(out, **result)


if __name__ == "__main__":
    main(sys.argv[1])
