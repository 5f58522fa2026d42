"""Turning task names from the command line into mteb task objects: MMEB subsets and groups, mteb tasks, benchmarks.

Accepted names, case-sensitive:

- ``MMEB`` (the 36 subsets), ``MMEB-IND``, ``MMEB-OOD``, ``MMEB-Classification``, ``MMEB-VQA``, ``MMEB-Retrieval``,
  ``MMEB-VisualGrounding``;
- one MMEB subset, by subset or task name: ``VOC2007`` or ``MMEB-VOC2007``;
- any mteb benchmark (``ViDoRe(v2)``) or task (``Vidore2ESGReportsRetrieval``).

An unknown name raises a ``ValueError`` that lists the closest known names.

Example:
    >>> tasks = resolve_tasks(["MMEB-VisualGrounding", "ViDoRe(v2)"])
    >>> len(tasks)
    8
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import mteb
from mteb.abstasks.abstask import AbsTask

from .mmeb_subsets import META_TASKS, MMEB_SUBSETS, subsets_of
from .mmeb_tasks import MMEB_TASK_CLASSES, get_mmeb_tasks, mmeb_task_name

MMEB_GROUPS: dict[str, list[str]] = {
    "MMEB": [s.name for s in MMEB_SUBSETS],
    "MMEB-IND": [s.name for s in subsets_of(domain="IND")],
    "MMEB-OOD": [s.name for s in subsets_of(domain="OOD")],
    **{f"MMEB-{m.replace(' ', '')}": [s.name for s in subsets_of(meta_task=m)] for m in META_TASKS},
}


def _known_names() -> list[str]:
    names = [*MMEB_GROUPS, *MMEB_TASK_CLASSES, *(s.name for s in MMEB_SUBSETS)]
    names += [benchmark.name for benchmark in mteb.get_benchmarks()]
    names += [task.metadata.name for task in mteb.get_tasks(exclude_superseded=False, exclude_private=False)]
    return names


def unknown_task_error(name: str) -> ValueError:
    """A ``ValueError`` naming ``name`` and the closest known task, benchmark and MMEB names."""
    known = _known_names()
    matches = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    lowered = [candidate for candidate in known if candidate.lower() == name.lower()]
    matches = list(dict.fromkeys(lowered + matches))
    hint = (
        f" Close matches: {', '.join(matches)}."
        if matches
        else " Use 'MMEB', an MMEB subset, or an mteb task name."
    )
    return ValueError(f"Unknown task or benchmark {name!r}.{hint}")


def use_local_dataset(task: AbsTask, directory: str | os.PathLike) -> AbsTask:
    """Points an mteb task at a local copy of its Hub dataset (same layout, e.g. a ViDoRe repo's folders).

    The copy is taken to be the task's pinned revision, which the results keep recording.

    Raises:
        FileNotFoundError: if ``directory`` does not exist.
    """
    path = Path(directory).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"Local dataset directory {str(path)!r} for {task.metadata.name} does not exist."
        )
    dataset = {**task.metadata.dataset, "path": str(path.resolve())}
    task.metadata = task.metadata.model_copy(update={"dataset": dataset})
    return task


def resolve_tasks(
    names: Iterable[str],
    *,
    mmeb_dir: str | os.PathLike | None = None,
    mmeb_image_dir: str | os.PathLike | None = None,
    local_datasets: Mapping[str, str | os.PathLike] | None = None,
) -> list[AbsTask]:
    """Task objects for the given names, in order, without duplicates.

    Args:
        names: Task, subset, group or benchmark names (see the module docstring).
        mmeb_dir: MMEB-eval root for the MMEB tasks (default: ``$METAEMBED_MMEB_DIR``, then the Hub).
        mmeb_image_dir: Folder MMEB image paths are relative to.
        local_datasets: mteb task name -> local directory holding that task's dataset (see :func:`use_local_dataset`).

    Raises:
        ValueError: for an unknown name (listing close matches), or a ``local_datasets`` key that names no selected
            task.
    """
    tasks: dict[str, AbsTask] = {}
    for name in names:
        if name in MMEB_GROUPS or mmeb_task_name(name):
            subsets = MMEB_GROUPS.get(name) or [name]
            selected = get_mmeb_tasks(subsets, data_dir=mmeb_dir, image_dir=mmeb_image_dir)
        else:
            try:
                selected = list(mteb.get_benchmark(name).tasks)
            except KeyError:
                try:
                    selected = [mteb.get_task(name)]
                except KeyError:
                    raise unknown_task_error(name) from None
        for task in selected:
            tasks.setdefault(task.metadata.name, task)
    for task_name, directory in (local_datasets or {}).items():
        if task_name not in tasks:
            raise ValueError(
                f"--local-dataset names {task_name!r}, which is not among the selected tasks {list(tasks)}."
            )
        use_local_dataset(tasks[task_name], directory)
    return list(tasks.values())


__all__ = ["MMEB_GROUPS", "resolve_tasks", "unknown_task_error", "use_local_dataset"]
