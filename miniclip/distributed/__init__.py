"""Past one process: data-parallel CLIP training over MPI, and gradient caching.

    mpiexec -n 2 python -m miniclip train --batch-size 256      # 2 ranks × 128 rows
    python -m miniclip train --batch-size 1024 --accum-freq 8    # 8 chunks of 128 rows

comm.py           the communicators: one process (default) and MPI (mpi4py)
gather.py         the all-gather with its backward (a reduce-scatter) and the local loss
ring.py           SigLIP's loss without an all-gather: text features passed round a ring
data_parallel.py  one training step over the global batch; parameter checks

The engine (autograd, nn, model) never imports this package; the training loop does.
"""
from miniclip.distributed.comm import (Communicator, MPICommunicator, communicator,
                                       launched_world_size)
from miniclip.distributed.data_parallel import (ContrastiveStep, StepResult, agree, batch_rows,
                                                broadcast_parameters, check_parameters_identical,
                                                parameters_digest, positives_rows)
from miniclip.distributed.gather import AllGather, all_gather, gathered_clip_loss
from miniclip.distributed.ring import ring_accuracy, ring_siglip_loss

__all__ = ["Communicator", "MPICommunicator", "communicator", "launched_world_size",
           "ContrastiveStep", "StepResult", "agree", "batch_rows", "broadcast_parameters",
           "check_parameters_identical", "parameters_digest", "positives_rows",
           "AllGather", "all_gather", "gathered_clip_loss", "ring_accuracy", "ring_siglip_loss"]
