"""The one timer every benchmark uses: the median of several runs after a warm-up."""
import statistics
import time


def median_seconds(fn, repeats=5, warmup=1):
    """Median wall-clock seconds of fn() over `repeats` runs, after `warmup` runs
    (the warm-up pays for first-touch allocations and caches)."""
    return statistics.median(seconds_of_runs(fn, repeats, warmup))


def seconds_of_runs(fn, repeats=5, warmup=1):
    """The wall-clock seconds of each of `repeats` runs of fn(), after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times
