"""Communicators: how the processes of one training run talk to each other.

A run on W processes ("ranks" 0..W-1) needs five collective operations, each
called by every rank at the same point of the program:

    all_gather(x)          x: (b, ...) on each rank -> (W·b, ...): every rank's rows, in rank order
    reduce_scatter_sum(g)  g: (W·b, ...) on each rank -> (b, ...): Σ over ranks of my rows of g
    all_reduce_mean(x)     x: any shape -> the mean over ranks of x (same on every rank)
    broadcast(x)           rank 0's x, on every rank
    (and all_reduce_max, all_gather_object, broadcast_object for small bookkeeping)
    barrier()              wait until every rank got here

`Communicator` is the single-process default: W = 1, every operation returns
its input. `MPICommunicator` runs them over MPI (mpi4py; start the processes
with `mpiexec -n W python -m miniclip train ...`). `communicator()` picks one
from the environment that mpiexec sets.

GPU arrays (CuPy). MPI moves bytes it can address. By default a CuPy array is
copied to a host buffer (after synchronising its stream, so the copy sees the
finished kernels), sent over MPI and copied back: correct with any MPI. The
seam for keeping data on the GPU is `_send_buffer` / `_result`: with a
CUDA-aware MPI (Open MPI or MPICH built with CUDA) mpi4py accepts CuPy arrays
directly (`MPICommunicator(cuda_aware=True)` or MINICLIP_CUDA_AWARE_MPI=1;
still synchronise the stream first). NCCL (`cupy.cuda.nccl`, which
`cupyx.distributed` wraps) is the other route: rank 0 makes a unique id,
broadcasts it over MPI, and every rank builds `NcclCommunicator(W, id, rank)`;
its allGather / reduceScatter / allReduce then replace the four array methods
below. Neither GPU route is exercised by this project's CI (no GPU there).
"""
import contextlib
import os
import sys
import time
import traceback

import numpy as np

from miniclip import backend

# environment variables an MPI launcher sets in each process it starts: the number of processes
_WORLD_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE",   # Open MPI
                         "PMI_SIZE",               # MPICH (Hydra), Intel MPI
                         "MV2_COMM_WORLD_SIZE")    # MVAPICH


class Communicator:
    """One process alone (W = 1): every collective is the identity."""
    rank = 0
    world_size = 1

    @property
    def is_main(self):
        """Rank 0: the rank that writes files and prints."""
        return self.rank == 0

    def all_gather(self, x):
        """x: (b, ...) -> (W·b, ...), rank 0's rows first."""
        return x

    def reduce_scatter_sum(self, x):
        """x: (W·b, ...) -> (b, ...): rows r·b..(r+1)·b of x, summed over all ranks."""
        return x

    def shift(self, x, steps=1):
        """x: an array -> the x of rank (r − steps) mod W: every rank passes its x `steps`
        places on round the ring (negative steps: the other way round)."""
        return x

    def all_reduce_mean(self, x):
        """x: an array -> the elementwise mean of x over the ranks."""
        return x

    def all_reduce_max(self, x):
        """x: an array -> the elementwise maximum of x over the ranks."""
        return x

    def broadcast(self, x):
        """x: an array (the same shape and dtype on every rank) -> rank 0's values."""
        return x

    def all_gather_object(self, obj):
        """Any picklable object -> the list of every rank's object."""
        return [obj]

    def broadcast_object(self, obj):
        """Any picklable object -> rank 0's (e.g. a checkpoint only rank 0 can read)."""
        return obj

    def barrier(self):
        """Return once every rank has called barrier()."""

    def abort(self, code=1):
        """End every rank of the run (after an error on one of them)."""
        raise SystemExit(code)

    @contextlib.contextmanager
    def abort_on_error(self):
        """An exception on one rank would leave the others waiting in their next collective
        forever: with several ranks, say what happened and end them all (MPI_Abort)."""
        try:
            yield
        except BaseException as err:
            if self.world_size == 1:
                raise
            if not isinstance(err, (ValueError, RuntimeError, KeyError, OSError)):
                traceback.print_exc()
            print(f"error on rank {self.rank} of {self.world_size}: "
                  f"{err.args[0] if err.args else type(err).__name__}", file=sys.stderr, flush=True)
            time.sleep(0.5)       # let the launcher forward that line: MPI_Abort drops output in flight
            self.abort(1)

    def __repr__(self):
        return f"{type(self).__name__}(rank={self.rank}, world_size={self.world_size})"


class MPICommunicator(Communicator):
    """The collectives over MPI (mpi4py's buffer methods: no pickling of arrays).

    comm: an mpi4py communicator (default MPI.COMM_WORLD).
    cuda_aware: hand CuPy arrays to MPI as they are (needs an MPI built with CUDA).
    """

    def __init__(self, comm=None, cuda_aware=None):
        from mpi4py import MPI
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank = self.comm.Get_rank()
        self.world_size = self.comm.Get_size()
        if cuda_aware is None:
            cuda_aware = os.environ.get("MINICLIP_CUDA_AWARE_MPI", "0") == "1"
        self.cuda_aware = cuda_aware
        self.bytes_sent = 0            # bytes this rank handed to collectives (benchmarks read it)
        self.seconds = 0.0             # wall time spent inside them

    # ---- the seam between device arrays and MPI buffers -----------------------------------
    def _send_buffer(self, x):
        """A contiguous buffer MPI can read: x itself (NumPy, or CuPy with CUDA-aware MPI)
        or a host copy of a CuPy array, made after its stream has finished."""
        xp = backend.get_array_module(x)
        if xp is not np:
            xp.cuda.get_current_stream().synchronize()      # kernels writing x are done
            if not self.cuda_aware:
                return np.ascontiguousarray(xp.asnumpy(x))
        return xp.ascontiguousarray(x)

    def _empty_like(self, buffer, shape):
        return backend.get_array_module(buffer).empty(shape, dtype=buffer.dtype)

    @staticmethod
    def _result(buffer, like):
        """The received buffer, on the device of `like` (copied back if it went via the host)."""
        if backend.get_array_module(like) is not np and backend.get_array_module(buffer) is np:
            return backend.to_device(buffer, "cuda")
        return buffer

    def _timed(self, nbytes):
        self.bytes_sent += nbytes
        return time.perf_counter()

    # ---- collectives ------------------------------------------------------------------------
    def all_gather(self, x):
        send = self._send_buffer(x)
        out = self._empty_like(send, (self.world_size * send.shape[0],) + send.shape[1:])
        start = self._timed(send.nbytes)
        self.comm.Allgather(send, out)
        self.seconds += time.perf_counter() - start
        return self._result(out, x)

    def reduce_scatter_sum(self, x):
        send = self._send_buffer(x)
        if send.shape[0] % self.world_size:
            raise ValueError(f"reduce_scatter_sum: {send.shape[0]} rows do not split over "
                             f"{self.world_size} ranks")
        out = self._empty_like(send, (send.shape[0] // self.world_size,) + send.shape[1:])
        start = self._timed(send.nbytes)
        self.comm.Reduce_scatter_block(send, out, op=self.MPI.SUM)
        self.seconds += time.perf_counter() - start
        return self._result(out, x)

    def shift(self, x, steps=1):
        send = self._send_buffer(x)
        out = self._empty_like(send, send.shape)
        start = self._timed(send.nbytes)
        self.comm.Sendrecv(send, dest=(self.rank + steps) % self.world_size,
                           recvbuf=out, source=(self.rank - steps) % self.world_size)
        self.seconds += time.perf_counter() - start
        return self._result(out, x)

    def _all_reduce(self, x, op):
        send = self._send_buffer(x)
        out = self._empty_like(send, send.shape)
        start = self._timed(send.nbytes)
        self.comm.Allreduce(send, out, op=op)
        self.seconds += time.perf_counter() - start
        return self._result(out, x)

    def all_reduce_mean(self, x):
        out = self._all_reduce(x, self.MPI.SUM)
        out /= self.world_size                           # Σ_r x_r / W
        return out

    def all_reduce_max(self, x):
        return self._all_reduce(x, self.MPI.MAX)

    def broadcast(self, x):
        buffer = self._send_buffer(x)
        if buffer is x:
            buffer = buffer.copy()                       # never overwrite the caller's array
        start = self._timed(buffer.nbytes if self.rank == 0 else 0)
        self.comm.Bcast(buffer, root=0)
        self.seconds += time.perf_counter() - start
        return self._result(buffer, x)

    def all_gather_object(self, obj):
        return self.comm.allgather(obj)

    def broadcast_object(self, obj):
        return self.comm.bcast(obj, root=0)

    def barrier(self, poll_seconds=0.005):
        """A barrier that sleeps while it waits, instead of MPICH's busy polling: the
        other ranks wait here while rank 0 evaluates, and should leave it the CPU."""
        request = self.comm.Ibarrier()
        while not request.Test():
            time.sleep(poll_seconds)

    def abort(self, code=1):
        self.comm.Abort(code)


def launched_world_size(environ=None):
    """The number of processes an MPI launcher started, read from its environment (1: none)."""
    environ = os.environ if environ is None else environ
    for name in _WORLD_SIZE_VARIABLES:
        if environ.get(name, "").strip().isdigit():
            return int(environ[name])
    return 1


def communicator(distributed=None, environ=None):
    """The communicator for this process.

    distributed: None (default) -> MPI when an MPI launcher started more than one process;
                 True -> MPI (also for `mpiexec -n 1`); False -> this process alone.
    """
    launched = launched_world_size(environ)
    if distributed is False:
        if launched > 1:
            raise RuntimeError(f"this process is one of {launched} started by an MPI launcher, "
                               f"but distributed training was switched off: each would train "
                               f"the same model into the same run folder; drop the switch or "
                               f"start a single process")
        return Communicator()
    if distributed is None and launched == 1:
        return Communicator()
    try:
        import mpi4py  # noqa: F401  (the import below also starts MPI)
    except ImportError:
        started = f"an MPI launcher started {launched} processes" if launched > 1 else \
            "distributed training was asked for"
        raise RuntimeError(f"{started}, but mpi4py is not installed: "
                           f"pip install -e \".[distributed]\" (mpi4py and MPICH)") from None
    return MPICommunicator()
