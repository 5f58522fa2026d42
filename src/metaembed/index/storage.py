"""The on-disk format of a :class:`~metaembed.index.MetaEmbedIndex`: immutable segments and a manifest.

An index is a directory::

    my_index/
        manifest.json                              # the snapshot: which segments, their sizes, crc32s
        segment-000001-1f2e3d4c.safetensors        # immutable; one per save that added items
        segment-000002-9a8b7c6d.safetensors

**Segments** are safetensors files (readable by any safetensors reader) holding one block of items,
budget-major:

- ``vectors``: ``[r_c_max, n, d]`` in the storage dtype (``BF16``, ``F16``, ``F8_E4M3``, ``I8`` or
  ``F32``), the first tensor of the data buffer; the header is padded so it starts 64-byte aligned.
  It is memory-mapped on open: a search at budget ``r_c`` touches only the first ``r_c/r_c_max`` of it.
- ``scales``: ``[r_c_max, n]`` float32 per-vector scales (int8 / float8 only).
- ``lengths``: ``[n]`` int32, the number of real vectors of each item (shorter items are padded by
  repeating their last vector, which leaves MaxSim unchanged).
- ``__metadata__``: the format name and version, the dtype, the item ids (a JSON list of strings)
  and their metadata (a JSON list of objects or nulls).

**The manifest** (``manifest.json``) lists the segments in order with each one's item count, byte size
and crc32 (of the whole file), plus the index's dimension, ``r_c_max``, dtype, item count and a crc32 of
its own content. It is the only file ever replaced: readers that open the manifest see one consistent
snapshot, however many appends happen meanwhile.

**Writes are atomic**: every file is written to a temporary name in the same directory, flushed,
``fsync``-ed and renamed over its final name with ``os.replace`` (then the directory is ``fsync``-ed).
A save writes its new segment(s) first and the manifest last, so a crash at any point leaves the
previous manifest, and every segment it names, intact. Files the new manifest no longer names (after
:meth:`~metaembed.index.MetaEmbedIndex.compact`) and stale temporary files are removed afterwards.

**One writer at a time**: saves from two processes into one directory are not coordinated (the
last manifest wins and may drop the other's segments); any number of readers is fine.

**Checks on open**: the manifest's own crc32; each segment's header, shapes and exact byte size
(a truncated file is reported as such); and, unless ``verify=False``, each segment's crc32 (reads
every byte once, about 4 GB/s).
"""

from __future__ import annotations

import contextlib
import json
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..fileio import TMP_MARKER, atomic_write
from .quantization import SAFETENSORS_DTYPES, STORAGE_DTYPES, canonical_dtype, is_quantized

__all__ = [
    "MANIFEST_NAME",
    "CorruptIndexError",
    "SegmentData",
    "SegmentInfo",
    "read_manifest",
    "read_segment",
    "remove_unreferenced",
    "write_manifest",
    "write_segment",
]

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "metaembed.index"
SEGMENT_FORMAT_NAME = "metaembed.index.segment"
FORMAT_VERSION = 1
_ALIGNMENT = 64
_IO_CHUNK = 16 * 2**20


class CorruptIndexError(ValueError):
    """An index file is truncated, corrupted or inconsistent with its manifest."""


@dataclass(frozen=True)
class SegmentInfo:
    """What the manifest records about one segment file."""

    file: str
    count: int
    bytes: int
    crc32: str

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "count": self.count, "bytes": self.bytes, "crc32": self.crc32}


@dataclass
class SegmentData:
    """The tensors and item data of one segment, as read from disk."""

    vectors: Tensor  # [r_c_max, n, d] storage dtype (memory-mapped when opened with mmap=True)
    scales: Tensor | None  # [r_c_max, n] float32
    lengths: Tensor  # [n] int32
    ids: list[str]
    metadata: list[Any]


def _tensor_bytes(tensor: Tensor) -> Iterable[memoryview]:
    """The raw bytes of a tensor (little-endian, C order) in chunks, without copying a CPU tensor."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
    view = memoryview(flat)
    for start in range(0, len(view), _IO_CHUNK):
        yield view[start : start + _IO_CHUNK]


def write_segment(
    directory: Path,
    name: str,
    *,
    vectors: Tensor,
    scales: Tensor | None,
    lengths: Tensor,
    ids: list[str],
    metadata: list[Any],
    dtype: str,
) -> SegmentInfo:
    """Writes one segment file atomically (see the module docstring for the layout)."""
    dtype = canonical_dtype(dtype)
    r_c, n, d = vectors.shape
    lengths = lengths.to(torch.int32)
    tensors: list[tuple[str, Tensor, str]] = [("vectors", vectors, SAFETENSORS_DTYPES[dtype])]
    if scales is not None:
        tensors.append(("scales", scales.to(torch.float32), "F32"))
    tensors.append(("lengths", lengths, "I32"))
    header: dict[str, Any] = {}
    offset = 0
    for key, tensor, code in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        header[key] = {"dtype": code, "shape": list(tensor.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header["__metadata__"] = {
        "format": SEGMENT_FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "dtype": dtype,
        "dim": str(d),
        "max_candidate_vectors": str(r_c),
        "count": str(n),
        "ids": json.dumps(ids, ensure_ascii=False),
        "metadata": json.dumps(metadata, ensure_ascii=False),
    }
    encoded = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    encoded += b" " * (-(8 + len(encoded)) % _ALIGNMENT)  # the data buffer starts 64-byte aligned

    def chunks() -> Iterable[bytes | memoryview]:
        yield struct.pack("<Q", len(encoded))
        yield encoded
        for _, tensor, _ in tensors:
            yield from _tensor_bytes(tensor)

    size, crc = atomic_write(Path(directory) / name, chunks())
    return SegmentInfo(file=name, count=n, bytes=size, crc32=crc)


def _file_crc32(path: Path) -> str:
    crc = 0
    buffer = bytearray(_IO_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb") as handle:
        while True:
            read = handle.readinto(buffer)
            if not read:
                break
            crc = zlib.crc32(view[:read], crc)
    return f"{crc:08x}"


def _parse_segment_header(path: Path, size: int) -> tuple[dict[str, Any], int]:
    if size < 8:
        raise CorruptIndexError(f"Segment {path} is truncated: {size} bytes, not even a header length.")
    with open(path, "rb") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8))
        if 8 + header_len > size:
            raise CorruptIndexError(
                f"Segment {path} is truncated: its header claims {header_len} bytes but the file has {size}."
            )
        raw = handle.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorruptIndexError(f"Segment {path} has a corrupt header ({error}).") from error
    meta = header.get("__metadata__", {}) if isinstance(header, dict) else {}
    if meta.get("format") != SEGMENT_FORMAT_NAME or "vectors" not in header:
        raise CorruptIndexError(f"{path} is not a MetaEmbed index segment (format {meta.get('format')!r}).")
    if meta.get("format_version") != str(FORMAT_VERSION):
        raise CorruptIndexError(
            f"Segment {path} has format version {meta.get('format_version')}; this metaembed reads "
            f"version {FORMAT_VERSION}. Upgrade metaembed or rebuild the index."
        )
    return header, 8 + header_len


def _load_region(path: Path, start: int, nbytes: int, *, mmap: bool) -> Tensor:
    if nbytes == 0:
        return torch.empty(0, dtype=torch.uint8)
    if mmap:
        # Copy-on-write mapping: pages load lazily, and writes (there are none) would stay private.
        array = np.memmap(path, dtype=np.uint8, mode="c", offset=start, shape=(nbytes,))
        return torch.from_numpy(array)
    with open(path, "rb") as handle:
        handle.seek(start)
        data = bytearray(nbytes)
        handle.readinto(data)
    return torch.frombuffer(data, dtype=torch.uint8)


def read_segment(
    path: Path, info: SegmentInfo | None = None, *, verify: bool = True, mmap: bool = True
) -> SegmentData:
    """Reads (memory-maps) one segment, checking its size and, with ``verify``, its crc32.

    Raises:
        FileNotFoundError: If the file is missing.
        CorruptIndexError: If the file is truncated, corrupted or disagrees with ``info``.
    """
    path = Path(path)
    size = path.stat().st_size
    if info is not None and size != info.bytes:
        kind = "truncated" if size < info.bytes else "longer than recorded"
        raise CorruptIndexError(
            f"Segment {path} is {kind}: the manifest records {info.bytes} bytes, the file has {size}. "
            "Restore the index from a backup or rebuild it."
        )
    header, data_start = _parse_segment_header(path, size)
    meta = header["__metadata__"]
    try:
        dtype = canonical_dtype(meta["dtype"])
        end = max(entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__")
        r_c, n, d = header["vectors"]["shape"]
        ids = json.loads(meta["ids"])
        metadata = json.loads(meta["metadata"])
    except (KeyError, ValueError, TypeError) as error:
        raise CorruptIndexError(f"Segment {path} has an inconsistent header ({error!r}).") from error
    if data_start + end != size:
        kind = "truncated" if size < data_start + end else "longer than its header says"
        raise CorruptIndexError(f"Segment {path} is {kind}: expected {data_start + end} bytes, found {size}.")
    if len(ids) != n or len(metadata) != n or (info is not None and info.count != n):
        raise CorruptIndexError(
            f"Segment {path} holds {n} vectors but {len(ids)} ids / {len(metadata)} metadata."
        )
    if verify and info is not None:
        crc = _file_crc32(path)
        if crc != info.crc32:
            raise CorruptIndexError(
                f"Segment {path} fails its checksum (crc32 {crc}, manifest says {info.crc32}): the file is "
                "corrupted. Restore the index from a backup or rebuild it."
            )

    def region(key: str, torch_dtype: torch.dtype, shape: list[int], load_mmap: bool) -> Tensor:
        begin, stop = header[key]["data_offsets"]
        raw = _load_region(path, data_start + begin, stop - begin, mmap=load_mmap)
        return raw.view(torch_dtype).view(shape)

    vectors = region("vectors", STORAGE_DTYPES[dtype], [r_c, n, d], mmap)
    scales = None
    if is_quantized(dtype):
        if "scales" not in header:
            raise CorruptIndexError(f"Segment {path} stores {dtype} vectors without their scales.")
        scales = region("scales", torch.float32, [r_c, n], False)
    lengths = region("lengths", torch.int32, [n], False)
    return SegmentData(vectors=vectors, scales=scales, lengths=lengths, ids=ids, metadata=metadata)


def _manifest_checksum(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return f"{zlib.crc32(canonical):08x}"


def write_manifest(
    directory: Path, *, config: dict[str, Any], segments: list[SegmentInfo], generation: int
) -> None:
    """Writes the manifest atomically; this is the commit point of a save."""
    body = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        **config,
        "count": sum(s.count for s in segments),
        "generation": generation,
        "segments": [s.to_json() for s in segments],
    }
    body["checksum"] = _manifest_checksum(body)
    atomic_write(
        Path(directory) / MANIFEST_NAME, [json.dumps(body, indent=1, ensure_ascii=False).encode("utf-8")]
    )


def read_manifest(directory: Path) -> tuple[dict[str, Any], list[SegmentInfo]]:
    """Reads and checks the manifest of an index directory.

    Raises:
        FileNotFoundError: If there is no index at ``directory``.
        CorruptIndexError: If the manifest is unreadable or fails its checksum.
    """
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"No MetaEmbed index at {directory}: {MANIFEST_NAME} is missing. Build one with "
            "MetaEmbedIndex(...).save(path)."
        )
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        checksum = body.pop("checksum")
        segments = [SegmentInfo(**entry) for entry in body["segments"]]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise CorruptIndexError(
            f"The manifest {path} is corrupt ({error!r}); restore it from a backup."
        ) from error
    if body.get("format") != FORMAT_NAME:
        raise CorruptIndexError(f"{path} is not a MetaEmbed index manifest (format {body.get('format')!r}).")
    if checksum != _manifest_checksum(body):
        raise CorruptIndexError(f"The manifest {path} fails its checksum: it was edited or corrupted.")
    if body.get("format_version") != FORMAT_VERSION:
        raise CorruptIndexError(
            f"{path} has format version {body.get('format_version')}; this metaembed reads {FORMAT_VERSION}."
        )
    if body["count"] != sum(s.count for s in segments):
        raise CorruptIndexError(
            f"The manifest {path} counts {body['count']} items but its segments hold more/less."
        )
    return body, segments


def remove_unreferenced(directory: Path, keep: set[str]) -> None:
    """Removes segment files the manifest no longer names, and stale temporary files.

    Readers that already mapped a removed segment keep reading it (POSIX keeps unlinked files alive);
    a reader that read the previous manifest but not yet the segment retries with the new manifest.
    """
    for path in Path(directory).iterdir():
        name = path.name
        stale_tmp = name.startswith(".") and TMP_MARKER in name
        old_segment = name.startswith("segment-") and name.endswith(".safetensors") and name not in keep
        if stale_tmp or old_segment:
            with contextlib.suppress(OSError):
                path.unlink()
