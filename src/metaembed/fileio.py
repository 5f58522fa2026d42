"""Crash-safe file writes for the library (the shipped checkpoint files carry their own, as they must)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import uuid
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

TMP_MARKER = ".tmp-"


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform / filesystem can fsync a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | os.PathLike, chunks: Iterable[bytes | memoryview]) -> tuple[int, str]:
    """Writes `chunks` to `path` atomically: a temporary file beside it, flush, fsync, `os.replace`, fsync of the
    folder. A crash at any point leaves either the old file or the new one, never a mix.

    Returns:
        `(size in bytes, crc32 as 8 hex digits)` of what was written.

    Example:
        >>> atomic_write("manifest.json", [b"{}"])
        (2, 'a3a6bf43')
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}{TMP_MARKER}{uuid.uuid4().hex[:8]}")
    crc, size = 0, 0
    try:
        with open(tmp, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
                crc = zlib.crc32(chunk, crc)
                size += len(chunk) if isinstance(chunk, bytes) else chunk.nbytes
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_directory(path.parent)
    return size, f"{crc:08x}"


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """[`atomic_write`] for UTF-8 text; returns the path."""
    atomic_write(path, [text.encode("utf-8")])
    return Path(path)


def write_json(path: str | os.PathLike, payload: Any, **dumps_kwargs: Any) -> Path:
    """Writes ``payload`` as indented JSON (with a final newline) atomically, creating the parent folder.

    Example:
        >>> write_json("outputs/results.json", {"ndcg@10": 0.68})
        PosixPath('outputs/results.json')
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, json.dumps(payload, indent=2, **dumps_kwargs) + "\n")


def save_figure(figure: Any, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Saves a matplotlib figure atomically (format from the suffix), creating the parent folder, and closes it.

    Example:
        >>> save_figure(figure, "outputs/plot.png")
        PosixPath('outputs/plot.png')
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(figure)
    atomic_write(path, [buffer.getbuffer()])
    return path


__all__ = ["TMP_MARKER", "atomic_write", "atomic_write_text", "save_figure", "write_json"]
