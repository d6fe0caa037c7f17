"""glibc's malloc, set up for processes that measure images: freed arrays are kept.

The metrics allocate and free arrays of a few MiB per image. With glibc's defaults
such blocks go back to the kernel (`munmap`, heap trimming) and the next image faults
every page in again: about 1,400 page faults and 3.3 ms of system time per 640 px
JPEG (of 25 ms), 12.7 ms per 1.5 MP one (of 92 ms). Dask's nanny makes it worse: its
MALLOC_TRIM_THRESHOLD_=65536 also freezes glibc's mmap threshold at 128 KiB. Serving
blocks up to MMAP_THRESHOLD from the heap and trimming it only past TRIM_THRESHOLD
free avoids that (`python -m bench.worker_env`). Larger arrays (images over about
16 MP) are still mapped and unmapped, and a process keeps at most TRIM_THRESHOLD free
on top of its heap, so the per-image memory budget (`decode.BYTES_PER_PIXEL`) holds:
three 12 MP JPEGs, then a 48 MP one, peak at 1,451 MiB against 1,439 MiB without.
Pixels and metric values do not depend on where an array lives (checked bit for bit
on 380 JPEGs).

The same settings, two ways: `MALLOC_ENV` in the environment of a process about to
start (glibc reads it once: Dask's workers), `keep_freed_memory()` in a running one
(score's forked workers, and the command's own process).
"""

from __future__ import annotations

MMAP_THRESHOLD = 64 << 20
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD
MALLOC_ENV: dict[str, str] = {
    "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD),
    "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD),
}


def keep_freed_memory() -> None:
    """Apply the thresholds to this process (no-op where the C library is not glibc)."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except AttributeError:  # not glibc
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    mallopt(m_mmap_threshold, MMAP_THRESHOLD)
    mallopt(m_trim_threshold, TRIM_THRESHOLD)
