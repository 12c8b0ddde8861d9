"""DT_NEEDED of ELF shared libraries, read directly from the file (no readelf/ldd needed).

The spec uses it to drop CUDA libraries that nothing in a CPU-only bundle loads: a library stays when
it is reachable through DT_NEEDED from the rest of the bundle (the dynamic loader would demand it at
import time), and goes when only a CUDA code path would ``dlopen`` it (cuDNN's engine libraries,
cuSOLVER-Mg, the alternative NVRTC, …).
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

PT_LOAD, PT_DYNAMIC = 1, 2
DT_NULL, DT_NEEDED, DT_STRTAB = 0, 1, 5


def needed(path: str | Path) -> list[str] | None:
    """The DT_NEEDED sonames of ``path`` in order, [] for a file without a dynamic section, None when it is
    not a readable 64-bit little-endian ELF file (callers must then keep everything: its needs are unknown)."""
    try:
        with open(path, "rb") as f:
            return _needed(f)
    except (OSError, struct.error, ValueError):
        return None


def _needed(f: BinaryIO) -> list[str] | None:
    head = f.read(64)
    if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
        return None
    phoff, = struct.unpack_from("<Q", head, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
    f.seek(phoff)
    table = f.read(phentsize * phnum)
    loads, dynamic = [], None
    for i in range(phnum):
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz, _memsz, _align = struct.unpack_from(
            "<IIQQQQQQ", table, i * phentsize)
        if p_type == PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == PT_DYNAMIC:
            dynamic = (p_offset, p_filesz)
    if dynamic is None:
        return []
    f.seek(dynamic[0])
    dyn = f.read(dynamic[1])
    entries, strtab = [], None
    for off in range(0, len(dyn) - 15, 16):
        tag, val = struct.unpack_from("<qQ", dyn, off)
        if tag == DT_NULL:
            break
        if tag == DT_NEEDED:
            entries.append(val)
        elif tag == DT_STRTAB:
            strtab = val
    if strtab is None:
        return None
    base = next((strtab - v + o for v, o, n in loads if v <= strtab < v + n), None)
    if base is None:
        return None
    names = []
    for val in entries:
        f.seek(base + val)
        raw = f.read(4096)
        names.append(raw[:raw.index(b"\0")].decode("utf-8", "replace"))
    return names


def reachable(roots: Iterable[str | Path], available: dict[str, str | Path]) -> set[str] | None:
    """Sonames in ``available`` (soname -> file) reachable through DT_NEEDED from the ``roots`` files, or None
    when some file's needs cannot be read (then nothing may be dropped)."""
    seen: set[str] = set()
    queue: deque[str | Path] = deque(roots)
    while queue:
        deps = needed(queue.popleft())
        if deps is None:
            return None
        for name in deps:
            if name in available and name not in seen:
                seen.add(name)
                queue.append(available[name])
    return seen
