"""Generated evaluation fixtures: MMEB-eval and ViDoRe laid out exactly as published, and a tiny checkpoint.

Nothing is downloaded. Images are coloured shapes drawn with PIL; texts name them. The MMEB fixture follows
``TIGER-Lab/MMEB-eval``: one folder per subset with ``test-00000-of-00001.parquet`` (``qry_text``, ``qry_img_path``,
``tgt_text``, ``tgt_img_path``), the positive first in every candidate list, MMEB's ``<|image_1|>`` placeholder and
inline instructions, and the images under ``images/`` with paths relative to it. Each list also repeats one negative
and the positive at its end, as real MMEB lists sometimes repeat candidates, so de-duplication is exercised.

The ViDoRe fixture follows the ViDoRe v2 dataset repos: ``queries``, ``corpus`` and ``qrels`` configurations declared in
``README.md``, with ``query-id``/``query``/``language``, ``corpus-id``/``image`` and ``query-id``/``corpus-id``/``score``.

Example:
    >>> from metaembed.evaluation.fixtures import write_mmeb_fixture, write_vidore_fixture
    >>> root = write_mmeb_fixture("/tmp/mmeb", subsets=("VOC2007", "MSCOCO_t2i"))
    >>> sorted(p.name for p in root.iterdir())
    ['MSCOCO_t2i', 'VOC2007', 'images']
"""

from __future__ import annotations

import io
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .mmeb_data import IMAGE_MARKER
from .mmeb_subsets import MMEB_PARQUET_NAME, SUBSETS_BY_NAME, MMEBSubset

COLORS = ("red", "green", "blue", "yellow", "purple", "orange")
SHAPES = ("circle", "square", "triangle", "cross")
SIDES = ("left", "right")
DEFAULT_MMEB_SUBSETS = ("VOC2007", "MSCOCO_t2i", "RefCOCO")
VIDORE_LANGUAGES = ("english", "french", "spanish", "german")

Combo = tuple[str, str, str]


def _combos() -> list[Combo]:
    return [(color, shape, side) for color in COLORS for shape in SHAPES for side in SIDES]


def caption(combo: Combo) -> str:
    """``("red", "circle", "left")`` -> ``"a red circle on the left"``."""
    color, shape, side = combo
    return f"a {color} {shape} on the {side}"


def draw(combo: Combo, size: tuple[int, int] = (56, 56), background: str = "white", jitter: int = 0) -> Any:
    """A PIL image of one coloured shape on one side."""
    from PIL import Image, ImageDraw

    color, shape, side = combo
    width, height = size
    image = Image.new("RGB", size, background)
    pen = ImageDraw.Draw(image)
    half = width // 2
    left = (0 if side == "left" else half) + 4 + jitter
    box = (left, height // 4 + jitter, left + half - 8, height // 4 + half - 8 + jitter)
    if shape == "circle":
        pen.ellipse(box, fill=color)
    elif shape == "square":
        pen.rectangle(box, fill=color)
    elif shape == "triangle":
        pen.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])], fill=color)
    else:
        mid_x, mid_y = (box[0] + box[2]) // 2, (box[1] + box[3]) // 2
        pen.rectangle((box[0], mid_y - 3, box[2], mid_y + 3), fill=color)
        pen.rectangle((mid_x - 3, box[1], mid_x + 3, box[3]), fill=color)
    return image


def _query_content(subset: MMEBSubset, combo: Combo) -> str:
    if subset.meta_task == "VQA":
        return "What is shown in the image?"
    if subset.meta_task == "Classification" or (
        subset.meta_task == "Retrieval" and subset.category == "it2t"
    ):
        return ""  # the image is the whole query; the instruction is its only text
    return caption(combo)


def write_mmeb_fixture(
    root: str | os.PathLike,
    subsets: Sequence[str] = DEFAULT_MMEB_SUBSETS,
    *,
    num_queries: int = 6,
    num_candidates: int = 24,
    seed: int = 0,
    image_size: int = 56,
) -> Path:
    """Writes a small MMEB-eval copy: ``<root>/<subset>/test-00000-of-00001.parquet`` and ``<root>/images/``.

    Args:
        root: Output directory (created).
        subsets: MMEB subset names; their categories decide which sides carry images.
        num_queries: Queries per subset.
        num_candidates: Distinct candidates per query, positive included (at most 48); every list then repeats one
            negative and the positive, so it lists ``num_candidates + 2`` entries.
        seed: Seed of every random choice.
        image_size: Edge of the square images, in pixels.

    Returns:
        ``root`` as a ``Path``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    combos = _combos()
    if not 2 <= num_candidates <= len(combos):
        raise ValueError(f"num_candidates must be in 2..{len(combos)}, got {num_candidates}.")
    if not 1 <= num_queries <= len(combos):
        raise ValueError(f"num_queries must be in 1..{len(combos)}, got {num_queries}.")
    root = Path(root)
    images = root / "images"
    for name in subsets:
        if name not in SUBSETS_BY_NAME:
            raise ValueError(f"Unknown MMEB subset {name!r}.")
        subset = SUBSETS_BY_NAME[name]
        rng = random.Random(f"{seed}-{name}")
        (root / name).mkdir(parents=True, exist_ok=True)
        (images / name).mkdir(parents=True, exist_ok=True)

        def image_file(combo: Combo, kind: str, jitter: int = 0, subset_name: str = name) -> str:
            relative = f"{subset_name}/{kind}_{'_'.join(combo)}.png"
            path = images / relative
            if not path.exists():
                draw(combo, (image_size, image_size), jitter=jitter).save(path)
            return relative

        columns: dict[str, list] = {"qry_text": [], "qry_img_path": [], "tgt_text": [], "tgt_img_path": []}
        for target in rng.sample(combos, num_queries):
            content = _query_content(subset, target)
            text = subset.instruction + (f" {content}" if content else "")
            if subset.query_has_image:
                columns["qry_text"].append(f"{IMAGE_MARKER}\n{text}")
                columns["qry_img_path"].append(image_file(target, "query", jitter=2))
            else:
                columns["qry_text"].append(text)
                columns["qry_img_path"].append("")
            negatives = rng.sample([c for c in combos if c != target], num_candidates - 1)
            listed = [target, *negatives, negatives[0], target]
            if subset.candidate_has_image:
                columns["tgt_text"].append([f"{IMAGE_MARKER}\nRepresent the given image."] * len(listed))
                columns["tgt_img_path"].append([image_file(c, "candidate") for c in listed])
            else:
                columns["tgt_text"].append([caption(c) for c in listed])
                columns["tgt_img_path"].append([""] * len(listed))
        table = pa.table(
            {
                "qry_text": pa.array(columns["qry_text"], pa.string()),
                "qry_img_path": pa.array(columns["qry_img_path"], pa.string()),
                "tgt_text": pa.array(columns["tgt_text"], pa.list_(pa.string())),
                "tgt_img_path": pa.array(columns["tgt_img_path"], pa.list_(pa.string())),
            }
        )
        pq.write_table(table, root / name / MMEB_PARQUET_NAME)
    return root


_VIDORE_README = """---
configs:
- config_name: queries
  data_files:
  - split: test
    path: queries/test-*.parquet
- config_name: corpus
  data_files:
  - split: test
    path: corpus/test-*.parquet
- config_name: qrels
  data_files:
  - split: test
    path: qrels/test-*.parquet
---
Generated ViDoRe-shaped fixture (metaembed.evaluation.fixtures).
"""


def write_vidore_fixture(
    root: str | os.PathLike,
    *,
    num_pages: int = 12,
    queries_per_language: int = 2,
    languages: Sequence[str] = VIDORE_LANGUAGES,
    seed: int = 0,
) -> Path:
    """Writes a ViDoRe v2-shaped dataset directory (``queries``, ``corpus``, ``qrels`` configurations).

    Pages are drawn shapes; each query asks for one page in one of ``languages`` (the multilingual ViDoRe v2 tasks
    split queries by this column) and has that page as its only relevant document.

    Returns:
        ``root`` as a ``Path``; point a ViDoRe task at it with :func:`.use_local_dataset`.
    """
    import datasets

    combos = _combos()
    if not 1 <= num_pages <= len(combos):
        raise ValueError(f"num_pages must be in 1..{len(combos)}, got {num_pages}.")
    rng = random.Random(f"{seed}-vidore")
    pages = rng.sample(combos, num_pages)
    root = Path(root)
    page_images = []
    for combo in pages:
        buffer = io.BytesIO()
        draw(combo, (56, 72), background="lightgray").save(buffer, format="PNG")
        page_images.append({"bytes": buffer.getvalue(), "path": f"page_{'_'.join(combo)}.png"})
    corpus = datasets.Dataset.from_dict({"corpus-id": list(range(num_pages)), "image": page_images})
    corpus = corpus.cast_column("image", datasets.Image())
    queries: dict[str, list] = {"query-id": [], "query": [], "language": []}
    qrels: dict[str, list] = {"query-id": [], "corpus-id": [], "score": []}
    for language in languages:
        for page in rng.sample(range(num_pages), queries_per_language):
            query_id = len(queries["query-id"])
            queries["query-id"].append(query_id)
            queries["query"].append(f"Which page shows {caption(pages[page])}?")
            queries["language"].append(language)
            qrels["query-id"].append(query_id)
            qrels["corpus-id"].append(page)
            qrels["score"].append(1)
    for config, dataset in (
        ("queries", datasets.Dataset.from_dict(queries)),
        ("corpus", corpus),
        ("qrels", datasets.Dataset.from_dict(qrels)),
    ):
        (root / config).mkdir(parents=True, exist_ok=True)
        dataset.to_parquet(root / config / "test-00000-of-00001.parquet")
    (root / "README.md").write_text(_VIDORE_README, encoding="utf-8")
    return root


def write_tiny_checkpoint(
    directory: str | os.PathLike,
    *,
    family: str = "qwen2_5_vl",
    num_query_meta_tokens: int = 4,
    num_candidate_meta_tokens: int = 8,
    seed: int = 0,
) -> Path:
    """Saves a seeded tiny MetaEmbed model and processor (random weights) as a full checkpoint directory.

    The directory loads with ``AutoModel`` / ``AutoProcessor`` and with ``MultiVectorEncoder`` (``trust_remote_code``).
    """
    from metaembed.checkpoint import save_checkpoint
    from metaembed.testing import build_tiny_metaembed

    model, processor = build_tiny_metaembed(
        family,
        seed=seed,
        num_query_meta_tokens=num_query_meta_tokens,
        num_candidate_meta_tokens=num_candidate_meta_tokens,
    )
    return save_checkpoint(model, processor, directory)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m metaembed.evaluation.fixtures OUT``: writes ``OUT/mmeb``, ``OUT/vidore`` and ``OUT/tiny-metaembed``."""
    import argparse

    parser = argparse.ArgumentParser(description="Write the offline evaluation fixtures.")
    parser.add_argument("output", help="Directory to create.")
    parser.add_argument(
        "--subsets", nargs="+", default=list(DEFAULT_MMEB_SUBSETS), help="MMEB subsets to generate."
    )
    args = parser.parse_args(argv)
    output = Path(args.output)
    paths = {
        "MMEB-eval copy": write_mmeb_fixture(output / "mmeb", subsets=args.subsets),
        "ViDoRe v2-shaped dataset": write_vidore_fixture(output / "vidore"),
        "tiny checkpoint": write_tiny_checkpoint(output / "tiny-metaembed"),
    }
    for label, path in paths.items():
        print(f"{label}: {path}")
    return 0


__all__ = ["caption", "draw", "main", "write_mmeb_fixture", "write_tiny_checkpoint", "write_vidore_fixture"]


if __name__ == "__main__":
    raise SystemExit(main())
