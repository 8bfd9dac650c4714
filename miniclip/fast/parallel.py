"""Big elementwise work split over the CPU cores: a small chunked thread pool.

NumPy's BLAS already uses every core for matrix products, but ufuncs (exp,
tanh, +, *, sums along the last axis) run on one thread. NumPy releases the
GIL inside a ufunc on large arrays, so Python threads that each call the same
ufuncs on their own block of rows run truly in parallel:

    out = xp.empty_like(x)
    def block(rows):                      # rows: a slice of the leading axis
        xp.tanh(x[rows], out=out[rows])
    for_row_blocks(len(x), block, size=x.size)

Every element is computed by the same ufunc call sequence as without the pool,
so results are bit-for-bit identical (only reductions *across* rows would
change their summation order: `for_row_blocks` is never used for those).
Blocks are also small enough to stay in the CPU cache while several ops run
on them one after another, which saves memory passes even on one thread.

How many threads (for this pool and for NumPy's BLAS), `num_threads()`,
decided once, the first time the fast tier needs it (nothing happens at
import): MINICLIP_THREADS if set (1 turns the pool off); else
OPENBLAS_NUM_THREADS / OMP_NUM_THREADS if set; else the cores this process
may run on minus those other processes keep busy, measured over 0.1 s
(busy_cores_now), at least 1. BLAS is given the same count then, through
threadpoolctl (configure_blas). `set_num_threads(n)` changes it later.

Why not simply all cores: a threaded GEMM splits each product in equal parts
and waits for every thread. When other processes hold the cores, one of
OpenBLAS's threads is descheduled and the others spin waiting for it (and,
after a product, keep spinning before they sleep, taking CPU from the
processes they wait for). On this project's 2-core machine at load ~14, a
(102, 64) @ (64, 256) product took 0.75 ms on 1 thread and 8.8 ms on 2, a
micro-config training step 9× longer. Measured beside each other in
benchmarks/vs_torch.py, 2 threads pay only on a machine that has 2 idle cores.

This pool does not wait for a descheduled thread: blocks are claimed one at a
time from a shared counter, so whichever thread runs takes the next block.
CuPy arrays never use the pool (the GPU is already parallel): `for_row_blocks`
then calls the function once on all rows.
"""
import itertools
import os
import time
from concurrent.futures import ThreadPoolExecutor

MIN_ELEMENTS = 1 << 16           # below this, thread hand-off costs more than it saves
BLOCK_ELEMENTS = 1 << 15         # ~128 KiB of float32 per array per block: fits in L2

_pool = None
_pool_threads = 0
_threads = None                  # num_threads(), once decided


def available_cores():
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                       # not Linux
        return max(1, os.cpu_count() or 1)


def busy_cores_now(interval=0.1):
    """How many of this process's cores others keep busy right now, or None if unknown.

    Reads /proc/stat (Linux) twice, `interval` seconds apart, while this process
    sleeps: busy = the time those cores spent neither idle nor waiting for
    disk (time a virtual machine's host gave to other guests, "steal",
    counts as busy), less this process's own CPU time meanwhile: BLAS's threads
    keep spinning for a while after a matrix product, and the count is decided
    at the first fast op, often just after one. The 1-minute load average would
    also count processes that finished seconds ago, such as the pip install just
    before a first run.
    """
    def sample():
        with open("/proc/stat") as f:                # "cpuN user nice system idle iowait ..."
            rows = [line.split() for line in f if line.startswith("cpu") and line[3].isdigit()]
        times = {int(row[0][3:]): [int(v) for v in row[1:]] for row in rows}
        return {cpu: (sum(t), t[3] + t[4]) for cpu, t in times.items() if cpu in cores}
    try:
        cores = os.sched_getaffinity(0)
        before, own_before, wall_before = sample(), time.process_time(), time.monotonic()
        time.sleep(interval)
        after, own_after, wall_after = sample(), time.process_time(), time.monotonic()
    except (AttributeError, OSError, ValueError, IndexError):
        return None
    busy = 0.0
    for cpu in after.keys() & before.keys():
        total = after[cpu][0] - before[cpu][0]
        idle = after[cpu][1] - before[cpu][1]
        busy += (total - idle) / total if total > 0 else 0.0
    own = (own_after - own_before) / max(wall_after - wall_before, 1e-9)   # cores this process used
    return max(0.0, busy - own)


def idle_cores():
    """Cores not kept busy by other processes right now (busy_cores_now), at least 1;
    without /proc/stat: cores − (1-minute load average − this process)."""
    cores = available_cores()
    others = busy_cores_now()
    if others is None:
        try:
            others = max(0.0, os.getloadavg()[0] - 1.0)
        except (AttributeError, OSError):
            return cores
    return max(1, min(cores, int(cores - others + 0.5)))


def threads_from_environment():
    """MINICLIP_THREADS, else OPENBLAS_NUM_THREADS / OMP_NUM_THREADS, else None."""
    for name in ("MINICLIP_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value:
            if not value.isdigit() or int(value) < 1:
                raise ValueError(f"{name}={value!r}: use a positive integer (1: no threads)")
            return int(value)
    return None


def num_threads():
    """Threads for the pool and BLAS, decided on the first call (see the module docstring)."""
    if _threads is None:
        set_num_threads(None)
    return _threads


def set_num_threads(threads):
    """Use `threads` threads for the pool and BLAS; None: decide again (the environment,
    else the idle cores now)."""
    global _threads
    if threads is None:
        threads = threads_from_environment() or idle_cores()
    _threads = threads
    configure_blas(threads)


def configure_blas(threads):
    """Give NumPy's BLAS `threads` threads; returns the count.

    Uses threadpoolctl, which changes a BLAS already loaded; without it, nothing changes.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return threads
    threadpool_limits(threads, user_api="blas")
    return threads


def _get_pool(threads):
    global _pool, _pool_threads
    if _pool is None or _pool_threads != threads:
        if _pool is not None:
            _pool.shutdown(wait=False)
        _pool, _pool_threads = ThreadPoolExecutor(threads, thread_name_prefix="miniclip"), threads
    return _pool


def row_blocks(num_rows, size, block_elements=BLOCK_ELEMENTS):
    """Slices that cut range(num_rows) into blocks of about `block_elements` elements
    (`size` elements in all)."""
    per_row = max(1, size // max(1, num_rows))
    step = max(1, block_elements // per_row)
    return [slice(start, min(start + step, num_rows)) for start in range(0, num_rows, step)]


def for_row_blocks(num_rows, fn, size, on_gpu=False):
    """Call fn(rows) for blocks of rows covering range(num_rows), on the pool's threads.

    size: how many elements the work touches per array (decides whether to split).
    fn must only write rows `rows` of its outputs (blocks never overlap).
    """
    if on_gpu or num_rows < 2:
        fn(slice(0, num_rows))
        return
    blocks = row_blocks(num_rows, size)
    threads = min(num_threads(), len(blocks))
    if threads == 1 or size < MIN_ELEMENTS:
        for rows in blocks:
            fn(rows)
        return
    claim = itertools.count()                    # next(claim) is atomic under the GIL

    def worker():
        for i in iter(lambda: next(claim), None):
            if i >= len(blocks):
                return
            fn(blocks[i])
    futures = [_get_pool(threads).submit(worker) for _ in range(threads - 1)]
    worker()                                     # this thread takes blocks too
    for future in futures:
        future.result()                          # re-raises a worker's exception
