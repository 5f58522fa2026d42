"""A small text retrieval set built from the Python standard library's docstrings, offline and deterministic.

Each public function, class and method with a multi-paragraph docstring gives one pair: the *query* is the
docstring's one-line summary, the *document* is the rest of the docstring. The split is by module, so the
held-out queries come from modules never seen in training. An optional hard negative is the docstring body of
another member of the same module (similar vocabulary, different meaning).

Example:
    >>> train = load_stdlib_docstrings("train")
    >>> test = load_stdlib_docstrings("test")
    >>> train[0].query, train[0].document[:40]
    ('Return the absolute version of a path.', ...)
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import logging
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Modules that import without side effects on every platform; the list is fixed so the set is reproducible.
STDLIB_MODULES = (
    "abc", "argparse", "ast", "asyncio.base_events", "asyncio.locks", "asyncio.queues", "asyncio.streams",
    "asyncio.tasks", "base64", "bdb", "bisect", "bz2", "calendar", "cgitb", "cmd", "code", "codecs", "codeop",
    "collections", "colorsys", "concurrent.futures._base", "configparser", "contextlib", "copy", "csv",
    "dataclasses", "datetime", "decimal", "difflib", "dis", "doctest", "email.message", "email.utils",
    "email.header", "enum", "filecmp", "fileinput", "fnmatch", "fractions", "ftplib", "functools", "getopt",
    "gettext", "glob", "graphlib", "gzip", "hashlib", "heapq", "hmac", "html", "html.parser", "http.client",
    "http.cookiejar", "http.cookies", "http.server", "imaplib", "importlib.abc", "importlib.metadata",
    "importlib.resources", "importlib.util", "inspect", "io", "ipaddress", "json", "json.decoder", "json.encoder",
    "keyword", "linecache", "locale", "logging", "logging.handlers", "lzma", "mailbox", "mimetypes",
    "multiprocessing.pool", "multiprocessing.queues", "netrc", "ntpath", "numbers", "operator", "optparse",
    "os", "pathlib", "pdb", "pickle", "pickletools", "pkgutil", "platform", "plistlib", "poplib", "posixpath",
    "pprint", "profile", "pstats", "py_compile", "pyclbr", "queue", "quopri", "random", "re", "reprlib",
    "rlcompleter", "runpy", "sched", "secrets", "selectors", "shelve", "shlex", "shutil", "signal", "smtplib",
    "socket", "socketserver", "sqlite3.dbapi2", "statistics", "string", "stringprep", "subprocess", "symtable",
    "sysconfig", "tabnanny", "tarfile", "tempfile", "textwrap", "threading", "timeit", "token", "tokenize",
    "trace", "traceback", "tracemalloc", "types", "typing", "unittest.case", "unittest.mock", "unittest.loader",
    "unittest.result", "urllib.parse", "urllib.request", "urllib.robotparser", "uu", "uuid", "warnings", "wave",
    "weakref", "wsgiref.handlers", "wsgiref.headers", "wsgiref.util", "xml.dom.minidom", "xml.etree.ElementTree",
    "xml.sax.saxutils", "xmlrpc.client", "zipapp", "zipfile", "zipimport", "zoneinfo._zoneinfo",
)  # fmt: skip
SPLITS = ("train", "test")


@dataclass(frozen=True)
class DocstringPair:
    """One retrieval pair: `query` (a docstring's summary line) and `document` (the rest of that docstring)."""

    query: str
    document: str
    module: str
    name: str
    hard_negative: str | None = None


def _module_split(module: str, test_fraction: float) -> str:
    bucket = int(hashlib.sha1(module.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if bucket < test_fraction else "train"


def _members(module: Any) -> list[tuple[str, Any]]:
    found = []
    for name, value in sorted(vars(module).items()):
        if name.startswith("_") or getattr(value, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(value):
            found.append((name, value))
        elif inspect.isclass(value):
            found.append((name, value))
            for attribute, member in sorted(vars(value).items()):
                if not attribute.startswith("_") and inspect.isfunction(member):
                    found.append((f"{name}.{attribute}", member))
    return found


def _split_docstring(doc: str, max_document_words: int) -> tuple[str, str] | None:
    summary, _, body = doc.strip().partition("\n\n")
    summary = " ".join(summary.split())
    body = " ".join(body.split())
    body = re.sub(r">>>.*", "", body).strip()  # doctest examples are code, not prose
    if not 4 <= len(summary.split()) <= 30 or len(body.split()) < 8:
        return None
    return summary, " ".join(body.split()[:max_document_words])


def _module_pairs(module_name: str, max_document_words: int) -> list[DocstringPair]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = importlib.import_module(module_name)
    except ImportError:  # pragma: no cover - depends on how Python was built
        logger.debug("Skipping %s: not importable here.", module_name)
        return []
    pairs = []
    for name, member in _members(module):
        doc = inspect.getdoc(member)
        split = _split_docstring(doc, max_document_words) if doc else None
        if split is not None:
            pairs.append(DocstringPair(split[0], split[1], module_name, name))
    return pairs


def _sibling(pairs: list[DocstringPair], index: int) -> DocstringPair:
    """The next pair of the same module (cyclically), or the next pair overall for a module with one pair."""
    module = pairs[index].module
    same = [j for j, pair in enumerate(pairs) if pair.module == module]
    if len(same) > 1:
        return pairs[same[(same.index(index) + 1) % len(same)]]
    return pairs[(index + 1) % len(pairs)]


def load_stdlib_docstrings(
    split: str = "train",
    *,
    test_fraction: float = 0.2,
    max_document_words: int = 64,
    hard_negatives: bool = False,
    limit: int | None = None,
    modules: Sequence[str] = STDLIB_MODULES,
) -> list[DocstringPair]:
    """The docstring retrieval pairs of one split.

    Args:
        split: "train" or "test"; modules are assigned to a split by a hash of their name, so the split does not
            depend on which other modules exist.
        test_fraction: Share of modules held out for "test".
        max_document_words: Documents are cut to this many words.
        hard_negatives: Attach, to each pair, the document of another member of the same module (of the next
            module when its own has one member).
        limit: Keep at most this many pairs (a deterministic, module-interleaved subset).
        modules: The modules to read.

    Returns:
        Pairs whose queries are unique and whose documents are unique, sorted by module then member name.

    Raises:
        ValueError: for an unknown split.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    pairs: list[DocstringPair] = []
    seen_queries: set[str] = set()
    seen_documents: set[str] = set()
    for module_name in sorted(modules):
        if _module_split(module_name, test_fraction) != split:
            continue
        module_pairs = []
        for pair in _module_pairs(module_name, max_document_words):
            key = pair.query.lower()
            if key in seen_queries or pair.document in seen_documents:
                continue
            seen_queries.add(key)
            seen_documents.add(pair.document)
            module_pairs.append(pair)
        pairs.extend(module_pairs)
    if hard_negatives and len(pairs) > 1:
        pairs = [
            DocstringPair(**{**asdict(pair), "hard_negative": _sibling(pairs, i).document})
            for i, pair in enumerate(pairs)
        ]
    if limit is not None and len(pairs) > limit:
        step = len(pairs) / limit
        pairs = [pairs[int(i * step)] for i in range(limit)]
    return pairs


def write_jsonl(pairs: Sequence[DocstringPair], path: str | os.PathLike) -> Path:
    """Writes pairs as JSON lines with `query`, `positive` and (when present) `negatives` columns, the layout
    `metaembed train` reads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as file:
        for pair in pairs:
            row: dict[str, Any] = {"query": pair.query, "positive": pair.document}
            if pair.hard_negative is not None:
                row["negatives"] = [pair.hard_negative]
            file.write(json.dumps(row) + "\n")
    return path


def recall_at_1_by_budget(
    encoder: Any,
    queries: Sequence[Any],
    documents: Sequence[Any],
    budgets: Sequence[Sequence[int]],
    batch_size: int = 32,
) -> dict[tuple[int, int], float]:
    """Recall@1 of query `i` retrieving document `i` among all documents, at every budget.

    Queries and documents are encoded once at their largest budget; each budget scores a prefix of the vectors
    (`encoder.similarity(..., budget=...)`), exactly what encoding at that budget gives.

    Args:
        encoder: A MetaEmbed `MultiVectorEncoder`.
        queries: The queries; `queries[i]`'s relevant document is `documents[i]`.
        documents: The documents.
        budgets: `(r_q, r_c)` pairs.
        batch_size: Encoding batch size.

    Returns:
        `{(r_q, r_c): recall@1}`.
    """
    import torch

    if len(queries) != len(documents):
        raise ValueError(f"Got {len(queries)} queries but {len(documents)} documents; pair them one to one.")
    largest = (max(r_q for r_q, _ in budgets), max(r_c for _, r_c in budgets))
    query_embeddings = encoder.encode_query(list(queries), budget=largest, batch_size=batch_size)
    document_embeddings = encoder.encode_document(list(documents), budget=largest, batch_size=batch_size)
    targets = torch.arange(len(queries))
    recalls = {}
    for budget in budgets:
        scores = encoder.similarity(query_embeddings, document_embeddings, budget=tuple(budget)).cpu()
        recalls[tuple(budget)] = (scores.argmax(dim=1) == targets).float().mean().item()
    return recalls


__all__ = [
    "STDLIB_MODULES",
    "DocstringPair",
    "load_stdlib_docstrings",
    "recall_at_1_by_budget",
    "write_jsonl",
]
