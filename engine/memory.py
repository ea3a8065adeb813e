"""Peak memory of a piece of work, on CUDA or on the CPU: one meter for inference's tile choice and for the
benchmarks.

CUDA: ``torch.cuda.max_memory_allocated`` (reset before the work). CPU (Linux): the resident-set high-water
mark (VmHWM) minus the resident set before the work, the mark being reset to the current resident set just
before it (``/proc/self/clear_refs`` = 5) and the C heap's free pages given back to the OS first
(``malloc_trim``), so that only live memory counts. tracemalloc does not see torch's allocations, hence the
resident set. Where ``clear_refs`` is not writable, ``resettable`` is False and ``measure`` falls back to the
growth of the process's all-time peak (``ru_maxrss``), which misses work that stays below an earlier peak.
"""
import contextlib
import ctypes
import ctypes.util
import re
import resource
import sys
from pathlib import Path

import torch


def _proc_status(field):
    match = re.search(rf'^{field}:\s+(\d+) kB', Path('/proc/self/status').read_text(), re.M)
    return int(match.group(1)) * 1024


def _release_free_heap():
    """Give the C heap's free pages back to the OS (glibc ``malloc_trim``), so that the resident set size
    counts live memory only and a probe's allocations show as growth; a no-op elsewhere."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6').malloc_trim(0)


def _max_rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == 'darwin' else 1024)


def peak_resident():
    """The process's resident-set high-water mark, in bytes (Linux's VmHWM; elsewhere the all-time peak)."""
    try:
        return _proc_status('VmHWM')
    except OSError:
        return _max_rss()


def _reset_peak():
    """Reset Linux's peak resident set (VmHWM) to the current one; False where that is not possible."""
    try:
        Path('/proc/self/clear_refs').write_text('5')
        return True
    except OSError:
        return False


class MemoryMeter:
    """``current()``: bytes in use now; ``measure(fn)``: bytes ``fn()`` added at its peak; ``peak()``: the
    highest use this meter has seen (``measure`` resets the kernel's counter, so the meter keeps its own)."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.cuda = self.device.type == 'cuda'
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        self.resettable = self.cuda or _reset_peak()
        self.seen = 0

    def current(self):
        if self.cuda:
            return torch.cuda.memory_allocated(self.device)
        _release_free_heap()
        return _proc_status('VmRSS')

    def peak(self):
        value = torch.cuda.max_memory_allocated(self.device) if self.cuda else _max_rss()
        self.seen = max(self.seen, value)
        return self.seen

    def measure(self, fn):
        self.peak()
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            before = self.current()
            fn()
            torch.cuda.synchronize(self.device)
            grown = torch.cuda.max_memory_allocated(self.device) - before
        elif self.resettable:
            before = self.current()
            _reset_peak()
            fn()
            grown = peak_resident() - before
        else:
            before = _max_rss()
            fn()
            grown = _max_rss() - before
        self.peak()
        return max(grown, 0)


def format_bytes(n):
    return f'{n / 2 ** 30:.2f} GB' if n >= 2 ** 30 else f'{n / 2 ** 20:.0f} MB'
