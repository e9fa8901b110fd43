"""Copying big memories a changed page at a time: the scans behind snapshots, checkpoints and restores.

A loaded model process has 1.2 GiB of linear memory, most of it zeros that were never written. A scan
compares 1 MiB spans with memcmp and descends only into the spans that differ, so its cost is one read
of each side at memory speed, and what it writes (and so what becomes resident) is only the pages that
differ. Snapshot buffers are anonymous maps: the pages a snapshot never writes cost no memory.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import re
import threading

_libc = ctypes.CDLL(None)  # CDLL: each call lets go of the GIL, so a worker's heartbeat goes on
_memcmp = _libc.memcmp
_memcmp.restype = ctypes.c_int
_memcmp.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
_memcpy = _libc.memcpy
_memcpy.restype = ctypes.c_void_p
_memcpy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
_madvise = _libc.madvise
_madvise.restype = ctypes.c_int
_madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_MADV_DONTNEED = 4

PAGE = 4096  # the unit of checkpoint deltas
_SPAN = 1 << 20
_BLOCK = 1 << 16
_ZEROS = mmap.mmap(-1, _SPAN)  # never written


def new_buffer(size: int) -> mmap.mmap | bytearray:
    """A zeroed buffer of ``size`` bytes whose untouched pages cost no memory."""
    return mmap.mmap(-1, size) if size else bytearray()


def address(buffer: bytes | bytearray | mmap.mmap) -> int:
    """Where ``buffer``'s bytes are, for as long as it lives (an mmap or bytearray: while not resized)."""
    if isinstance(buffer, bytes):
        return ctypes.cast(ctypes.c_char_p(buffer), ctypes.c_void_p).value or 0
    return ctypes.addressof(ctypes.c_char.from_buffer(buffer)) if len(buffer) else 0


def sync_pages(target: int, source: int, length: int, *, copy: bool = True, source_zero: bool = False) -> list[int]:
    """The numbers of the PAGE-sized pages of ``length`` bytes at ``source`` that differ from those at
    ``target``, copied over when ``copy``. ``source_zero``: compare ``target`` against zeros instead
    (``source`` is ignored), to find a memory's non-zero pages."""
    zeros = ctypes.addressof(ctypes.c_char.from_buffer(_ZEROS))
    changed: list[int] = []
    for span in range(0, length, _SPAN):
        span_length = min(_SPAN, length - span)
        if not _memcmp(target + span, zeros if source_zero else source + span, span_length):
            continue
        for block in range(span, span + span_length, _BLOCK):
            block_length = min(_BLOCK, length - block)
            if not _memcmp(target + block, zeros if source_zero else source + block, block_length):
                continue
            for page in range(block, block + block_length, PAGE):
                page_length = min(PAGE, length - page)
                if _memcmp(target + page, zeros if source_zero else source + page, page_length):
                    if copy:
                        _memcpy(target + page, source + page, page_length)
                    changed.append(page // PAGE)
    return changed


def nonzero_pages(buffer: bytes | bytearray | mmap.mmap, written: set[int] | None = None) -> list[int]:
    """The numbers of ``buffer``'s PAGE-sized pages that hold anything but zeros; only those in
    ``written`` are read when it is given (the others are zeros)."""
    at, pages = address(buffer), list[int]()
    for start, length in [(0, len(buffer))] if written is None else page_runs(written, len(buffer)):
        pages.extend(page + start // PAGE for page in sync_pages(at + start, 0, length, copy=False, source_zero=True))
    return pages


def copy_pages(target: int, source: int, length: int) -> list[int]:
    """Bring ``length`` bytes at ``target`` up to those at ``source``, writing only the pages that
    differ; return their numbers."""
    return sync_pages(target, source, length)


def restore_pages(target: int, source: int, length: int, written: set[int] | None) -> None:
    """Make ``length`` bytes at ``target`` (a private anonymous mapping, as linear memory is) equal to
    those at ``source``, where ``written`` holds every page of ``source`` that may not be zero. The
    target's pages are dropped (they read as zeros again, and a page never touched costs nothing:
    on this class of box a first touch of a page costs more than copying it), and the written pages
    copied. Without ``written``, or when the pages cannot be dropped, it compares and copies."""
    if written is None or target % mmap.PAGESIZE or _madvise(target, length, _MADV_DONTNEED):
        copy_pages(target, source, length)
        return
    for page in sorted(written):
        at = page * PAGE
        if at < length:
            _memcpy(target + at, source + at, min(PAGE, length - at))


# -- which pages of linear memory were ever touched --------------------------------------------------
# /proc/self/pagemap has 8 bytes a page; in its top byte, 0x80 is "present" and 0x40 "swapped". A
# page of a private anonymous mapping (linear memory is one: memory_init_cow is off) that is neither
# was never touched since it was last dropped, so it reads as zeros: a scan may skip it. Where the
# file cannot be read, every page is scanned.
_TOUCHED = bytes(1 if byte & 0xC0 else 0 for byte in range(256))
_RUN = re.compile(b"\x01+")
_pagemap: list[int] = []
_pagemap_lock = threading.Lock()


def _pagemap_fd() -> int:
    """The open pagemap, once it has shown that it tells a touched page from an untouched one; else -1."""
    with _pagemap_lock:
        if not _pagemap:
            try:
                fd = os.open("/proc/self/pagemap", os.O_RDONLY)
            except OSError:
                fd = -1
            if fd >= 0:
                probe = mmap.mmap(-1, 2 * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
                probe[PAGE] = 1
                at = address(probe)
                try:
                    flags = os.pread(fd, 16, at // PAGE * 8)[7::8].translate(_TOUCHED)
                except OSError:
                    flags = b""
                del at
                probe.close()
                if flags != b"\x00\x01":
                    os.close(fd)
                    fd = -1
            _pagemap.append(fd)
    return _pagemap[0]


def touched_runs(base: int, length: int) -> list[tuple[int, int]] | None:
    """(offset, length) runs of the pages of the private anonymous memory at ``base`` that were ever
    touched; None when the kernel does not say."""
    fd = _pagemap_fd()
    if fd < 0 or base % PAGE:
        return None
    count = -(-length // PAGE)
    try:
        entries = os.pread(fd, 8 * count, base // PAGE * 8)
    except OSError:
        return None
    if len(entries) != 8 * count:
        return None
    flags = entries[7::8].translate(_TOUCHED)
    return [(found.start() * PAGE, min(found.end() * PAGE, length) - found.start() * PAGE)
            for found in _RUN.finditer(flags)]


def page_runs(pages: set[int] | list[int], length: int) -> list[tuple[int, int]]:
    """``pages`` as sorted (offset, length) runs of whole pages, cut at ``length``."""
    runs: list[tuple[int, int]] = []
    for page in sorted(pages):
        at = page * PAGE
        if at >= length:
            break
        if runs and runs[-1][0] + runs[-1][1] == at:
            runs[-1] = (runs[-1][0], min(runs[-1][1] + PAGE, length - runs[-1][0]))
        else:
            runs.append((at, min(PAGE, length - at)))
    return runs


def merge_runs(*groups: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The union of runs, sorted, with touching or overlapping runs joined."""
    merged: list[tuple[int, int]] = []
    for at, length in sorted(run for group in groups for run in group):
        if merged and at <= merged[-1][0] + merged[-1][1]:
            end = max(merged[-1][0] + merged[-1][1], at + length)
            merged[-1] = (merged[-1][0], end - merged[-1][0])
        else:
            merged.append((at, length))
    return merged


def equal_runs(first: int, second: int, runs: list[tuple[int, int]]) -> bool:
    """Whether the bytes at ``first`` and at ``second`` are the same over the given runs."""
    return not any(_memcmp(first + at, second + at, length) for at, length in runs)


def copy_runs(target: int, source: int, runs: list[tuple[int, int]]) -> list[int]:
    """``copy_pages`` over the given runs only: the pages outside them are equal on both sides."""
    changed: list[int] = []
    for at, length in runs:
        changed.extend(page + at // PAGE for page in copy_pages(target + at, source + at, length))
    return changed
