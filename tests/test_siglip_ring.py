"""SigLIP's ring (miniclip/distributed/ring.py): on 2 ranks, the global batch's loss and gradients."""
import sys
from pathlib import Path

import numpy as np
import pytest

from miniclip.autograd.tensor import Tensor
from miniclip.distributed import communicator
from miniclip.distributed.ring import ring_siglip_loss
from miniclip.loss import siglip_loss
from test_distributed import needs_mpi, run_mpi

sys.path.insert(0, str(Path(__file__).parent))
import siglip_ring_worker as worker                                   # noqa: E402

WORKER = Path(__file__).parent / "siglip_ring_worker.py"


def one_process_reference():
    """The global batch's SigLIP loss on one process, and its gradients (float64)."""
    image, text, t, b = worker.fixed_features()
    image, text = Tensor(image, requires_grad=True), Tensor(text, requires_grad=True)
    t, b = Tensor(np.float64(t), requires_grad=True), Tensor(np.float64(b), requires_grad=True)
    loss = siglip_loss(t.exp() * (image @ text.T) + b)
    loss.backward()
    return {"loss": loss.data, "grad_image": image.grad, "grad_text": text.grad,
            "grad_t": t.grad, "grad_b": b.grad}


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
