"""The FAISS index's append-only journal: the writes flushed since its base file was written.

Rewriting a 2.7 GB base file for the few vectors of one video took seconds, and every other
process then reloaded all of it; a flush appends one record instead, and a process that already
holds the base reads only the records it has not seen. Layout: a header (``MAGIC``, then the
16-byte generation of the base file the journal extends: a journal left over from an earlier base
is recognised and ignored), then records. A record is one flush, written and fsynced under the
index's file lock: its payload's length and CRC-32, then the payload, a sequence of operations
``(op, count, name bytes, dim)``, the ids joined by newlines (ids never hold one) and, for an add,
the float32 vectors. Reading stops at the first record that is incomplete or fails its checksum:
a crash mid-append loses that flush only, and the next writer truncates it away.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator, Sequence
from typing import BinaryIO

import numpy as np

MAGIC = b"VMMJRNL1"
GENERATION_BYTES = 16
HEADER = len(MAGIC) + GENERATION_BYTES
_PREFIX = struct.Struct("<II")  # payload bytes, CRC-32 of the payload
_OP = struct.Struct("<BIII")  # op, ids, bytes of the joined ids, dim (0 for a delete)
_CODES = {"add": 1, "delete": 2}
_NAMES = {code: name for name, code in _CODES.items()}

Op = tuple[str, list[str], np.ndarray | None]  # ("add", ids, vectors) or ("delete", ids, None)


def header(generation: bytes) -> bytes:
    return MAGIC + generation


def generation(f: BinaryIO) -> bytes | None:
    """The generation a journal file extends; None when its header is missing or damaged."""
    f.seek(0)
    head = f.read(HEADER)
    return head[len(MAGIC) :] if len(head) == HEADER and head.startswith(MAGIC) else None


def record_size(ops: Sequence[Op]) -> int:
    """Bytes :func:`encode` makes of ``ops`` (without making them)."""
    size = _PREFIX.size
    for _, ids, vectors in ops:
        names = sum(len(i.encode()) for i in ids) + max(len(ids) - 1, 0)
        size += _OP.size + names + (0 if vectors is None else vectors.nbytes)
    return size


def encode(ops: Sequence[Op]) -> bytes:
    """One record holding ``ops`` in order."""
    parts = []
    for op, ids, vectors in ops:
        names = "\n".join(ids).encode()
        dim = 0 if vectors is None else vectors.shape[1]
        parts.append(_OP.pack(_CODES[op], len(ids), len(names), dim))
        parts.append(names)
        if vectors is not None:
            parts.append(np.ascontiguousarray(vectors, np.float32).tobytes())
    payload = b"".join(parts)
    return _PREFIX.pack(len(payload), zlib.crc32(payload)) + payload


def decode(payload: bytes) -> list[Op]:
    ops: list[Op] = []
    at = 0
    while at < len(payload):
        code, count, n_names, dim = _OP.unpack_from(payload, at)
        at += _OP.size
        ids = payload[at : at + n_names].decode().split("\n") if count else []
        at += n_names
        vectors = None
        if dim:
            vectors = np.frombuffer(payload, np.float32, count * dim, at).reshape(count, dim)
            at += vectors.nbytes
        ops.append((_NAMES[code], ids, vectors))
    return ops


def records(f: BinaryIO, start: int, end: int) -> Iterator[tuple[list[Op], int]]:
    """The whole, checked records of ``f`` between ``start`` and ``end``, each with the offset
    where it ends; stops at the first incomplete or damaged one (a crash's torn tail, or a record
    another process is appending right now)."""
    at = start
    while at + _PREFIX.size <= end:
        f.seek(at)
        length, crc = _PREFIX.unpack(f.read(_PREFIX.size))
        if at + _PREFIX.size + length > end:
            return
        payload = f.read(length)
        if len(payload) != length or zlib.crc32(payload) != crc:
            return
        at += _PREFIX.size + length
        yield decode(payload), at
