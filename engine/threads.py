"""CPU threads on a machine that other jobs share (``num_threads: 0``, the default).

PyTorch splits every operator's work evenly between its threads, so one thread that shares its core with
another job makes the whole operator wait for it: on 2 cores beside one CPU-bound process, a 2-thread training
step is 2.8x slower than idle, a 1-thread step 1.5x (benchmarks/bench_threads.py). ``CpuThreads`` therefore
runs as many threads as there are cores that this process may use and that no other runnable task occupies
(``procs_running`` of /proc/stat, the median of a few samples, minus this process's own thread that reads it),
at least one and at most PyTorch's default. ``update()`` re-checks; the trainer calls it at every log line and
says when the count changes. A fixed ``num_threads: N`` is set once and never changed.

Float results can depend on the thread count (the order of a reduction's partial sums): a run that must be
bitwise repeatable on resume sets ``num_threads``.
"""
import os
import statistics
import time

import torch


def available_cores():
    """Cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1


def busy_elsewhere(samples=5, interval=0.01):
    """Runnable tasks besides the calling thread, the median of ``samples`` readings of /proc/stat's
    ``procs_running`` (0 where it cannot be read)."""
    readings = []
    for i in range(samples):
        try:
            with open('/proc/stat') as f:
                running = next(int(line.split()[1]) for line in f if line.startswith('procs_running'))
        except (OSError, StopIteration, ValueError, IndexError):
            return 0
        readings.append(running - 1)
        if i + 1 < samples:
            time.sleep(interval)
    return max(0, int(statistics.median(readings)))


class CpuThreads:
    """torch's CPU thread count: fixed at ``requested`` (> 0), or chosen from the free cores (0)."""

    def __init__(self, requested=0):
        self.fixed = requested > 0
        self.most = requested if self.fixed else torch.get_num_threads()

    def update(self):
        """Set the thread count; returns (old, new, busy) when it changed, else None."""
        old = torch.get_num_threads()
        busy = 0
        if self.fixed:
            new = self.most
        else:
            busy = busy_elsewhere()
            new = max(1, min(self.most, available_cores() - busy))
        if new == old:
            return None
        torch.set_num_threads(new)
        return old, new, busy
