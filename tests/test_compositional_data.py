"""The compositional shape generator: determinism, one-edit hard negatives, and the MMEB-eval export layout."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metaembed.data.compositional import (
    CLASSIFICATION_LABELS,
    COLOURS,
    FAMILIES,
    IMAGES_DIR,
    MMEB_IMAGE_MARKER,
    PARQUET_NAME,
    SHAPES,
    SUBSET_NAMES,
    Caption,
    ObjectPhrase,
    Scene,
    ShapeObject,
    caption_edit_kind,
    caption_edits,
    classification_label,
    export_mmeb,
    generate_dataset,
    generate_split,
    parse_caption,
    sample_caption,
    sample_scene,
    scene_edit_kind,
    scene_edits,
)

N = 40


@pytest.fixture(scope="module")
def test_split():
    return generate_dataset(N, "test", seed=0)


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        file.relative_to(root).as_posix(): hashlib.sha256(file.read_bytes()).hexdigest()
        for file in sorted(root.rglob("*"))
        if file.is_file()
    }


# ---------------------------------------------------------------------------------------------------- determinism
def test_same_seed_gives_identical_examples_and_bytes(tmp_path, test_split):
    assert generate_dataset(N, "test", seed=0) == test_split
    export_mmeb(test_split, tmp_path / "a")
    export_mmeb(generate_dataset(N, "test", seed=0), tmp_path / "b")
    first, second = _tree_digest(tmp_path / "a"), _tree_digest(tmp_path / "b")
    assert len(first) > len(FAMILIES)
    assert first == second


def test_seeds_and_splits_draw_different_data(test_split):
    assert generate_dataset(N, "test", seed=1) != test_split
    train = generate_dataset(N, "train", seed=0)
    for family in FAMILIES:
        assert train[family] != test_split[family]


def test_rendering_is_deterministic_and_sized():
    scene = sample_scene(random.Random(3))
    assert scene.render(112).tobytes() == scene.render(112).tobytes()
    assert scene.render(224).size == (224, 224)


def _label_fields(label: str) -> tuple[str, str, str]:
    count, colour, shape = label.split()
    if shape not in SHAPES:
        shape = shape[:-2] if shape.endswith("es") and shape[:-2] in SHAPES else shape[:-1]
    return count, colour, shape


# ---------------------------------------------------------------------------------------------------- structure
def test_captions_round_trip_and_describe_their_scene():
    rng = random.Random(0)
    for _ in range(200):
        scene = sample_scene(rng)
        caption = sample_caption(rng, scene)
        assert parse_caption(caption.text) == caption
        assert caption.holds(scene)


def test_caption_example_from_the_issue():
    red_circle, blue_square = ObjectPhrase("small", "red", "circle"), ObjectPhrase("small", "blue", "square")
    caption = Caption(2, red_circle, "left of", blue_square)
    swapped = parse_caption("two shapes: a small blue circle left of a small red square")
    assert caption_edit_kind(caption, swapped) == "swap_colours"
    scene = Scene((ShapeObject("circle", "red", "small", 0, 0), ShapeObject("square", "blue", "small", 0, 1)))
    assert caption.holds(scene)
    assert not swapped.holds(scene)


def test_every_caption_edit_is_exactly_one_edit_of_its_kind():
    rng = random.Random(1)
    for _ in range(100):
        scene = sample_scene(rng)
        caption = sample_caption(rng, scene)
        for kind, edited in caption_edits(caption):
            assert caption_edit_kind(caption, edited) == kind


def test_every_scene_edit_is_exactly_one_edit_of_its_kind():
    rng = random.Random(2)
    for _ in range(100):
        scene = sample_scene(rng)
        for kind, edited in scene_edits(scene, rng):
            assert scene_edit_kind(scene, edited) == kind, (kind, scene, edited)
    two = Scene((ShapeObject("circle", "red", "small", 0, 0), ShapeObject("star", "red", "large", 1, 1)))
    assert scene_edit_kind(two, Scene(two.objects[:1])) == "remove_object"
    both_changed = Scene((ShapeObject("square", "blue", "small", 0, 0), two.objects[1]))
    assert scene_edit_kind(two, both_changed) is None


def test_retrieval_hard_negatives_differ_in_exactly_one_attribute_or_relation(test_split):
    for example in test_split["i2t"]:
        positive = parse_caption(example.positive.text)
        assert positive.holds(example.query.scene)
        assert example.num_hard >= 1
        for negative in example.hard_negatives:
            edited = parse_caption(negative.text)
            assert caption_edit_kind(positive, edited) is not None
            assert not edited.holds(example.query.scene)
        for other in example.candidates[1 + example.num_hard :]:
            assert not parse_caption(other.text).holds(example.query.scene)
    for example in test_split["t2i"]:
        caption = parse_caption(example.query.text)
        assert caption.holds(example.positive.scene)
        for negative in example.hard_negatives:
            assert scene_edit_kind(example.positive.scene, negative.scene) is not None
            assert not caption.holds(negative.scene)
        for other in example.candidates[1 + example.num_hard :]:
            assert not caption.holds(other.scene)


def test_hard_negatives_cover_relations_and_colour_swaps():
    examples = generate_split("i2t", "test", 200, seed=0)
    kinds = {
        caption_edit_kind(parse_caption(e.positive.text), parse_caption(n.text))
        for e in examples
        for n in e.hard_negatives
    }
    assert {"colour", "shape", "size", "relation", "count", "swap_colours"} <= kinds


def test_classification_vqa_and_grounding_candidates(test_split):
    labels = {classification_label(*label) for label in CLASSIFICATION_LABELS}
    assert len(labels) == len(CLASSIFICATION_LABELS) == 4 * len(COLOURS) * len(SHAPES)
    for example in test_split["classification"]:
        scene = example.query.scene
        first = scene.objects[0]
        assert example.positive.text == classification_label(scene.count(), first.colour, first.shape)
        assert {c.text for c in example.candidates} == labels
        truth = _label_fields(example.positive.text)
        for negative in example.hard_negatives:
            fields = _label_fields(negative.text)
            changed = [i for i in range(3) if fields[i] != truth[i]]
            assert len(changed) == 1, (example.positive.text, negative.text)
    for example in test_split["vqa"]:
        texts = [c.text for c in example.candidates]
        assert len(set(texts)) == len(texts)
    for example in test_split["grounding"]:
        scene = example.query.scene
        matching = [o for o in scene.objects if o.phrase.text == example.positive.text]
        assert len(matching) == 1
        assert example.positive.text not in {n.text for n in example.hard_negatives}


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="family"):
        generate_split("ocr", "test", 2)
    with pytest.raises(ValueError, match="split"):
        generate_split("t2i", "validation", 2)
    with pytest.raises(ValueError, match="grid cell"):
        Scene((ShapeObject("circle", "red", "small", 0, 0), ShapeObject("star", "red", "small", 0, 0)))


# ---------------------------------------------------------------------------------------------------- export
def test_export_matches_the_mmeb_eval_layout(tmp_path, test_split):
    written = export_mmeb(test_split, tmp_path)
    expected_schema = {
        "qry_text": pa.string(),
        "qry_img_path": pa.string(),
        "tgt_text": pa.list_(pa.string()),
        "tgt_img_path": pa.list_(pa.string()),
    }
    for family, examples in test_split.items():
        path = tmp_path / SUBSET_NAMES[family] / PARQUET_NAME
        assert written[family] == path
        table = pq.read_table(path)
        assert {name: table.schema.field(name).type for name in table.schema.names} == expected_schema
        rows = table.to_pylist()
        assert len(rows) == len(examples)
        for row, example in zip(rows, examples):
            assert len(row["tgt_text"]) == len(row["tgt_img_path"]) == len(example.candidates)
            pairs = list(zip(row["tgt_text"], row["tgt_img_path"]))
            assert len(set(pairs)) == len(pairs), "candidates repeat within a row"
            # The first candidate is the positive.
            positive = example.positive
            expected_text = (MMEB_IMAGE_MARKER if positive.scene else "") + positive.text
            assert row["tgt_text"][0] == expected_text
            if positive.scene is not None:
                assert row["tgt_img_path"][0].endswith(f"{positive.scene.key}.png")
            for text, image in [(row["qry_text"], row["qry_img_path"]), *pairs]:
                if image:
                    assert text.startswith(MMEB_IMAGE_MARKER)
                    assert not Path(image).is_absolute() and ".." not in Path(image).parts
                    assert (tmp_path / IMAGES_DIR / image).is_file()
                else:
                    assert MMEB_IMAGE_MARKER not in text
    from PIL import Image

    some = next((tmp_path / IMAGES_DIR).rglob("*.png"))
    with Image.open(some) as image:
        assert image.size == (112, 112) and image.mode == "RGB"


def test_export_loads_through_the_project_mmeb_reader(tmp_path, test_split):
    from metaembed.evaluation.mmeb_data import load_mmeb_subset
    from metaembed.experiments.evaluation import shapes_subset

    export_mmeb(test_split, tmp_path)
    for family, examples in test_split.items():
        split = load_mmeb_subset(shapes_subset(family), data_dir=tmp_path)
        queries, corpus = split["queries"], split["corpus"]
        assert len(queries) == len(examples)
        texts = dict(zip(corpus["id"], corpus["text"]))
        for query_id, example in zip(queries["id"], examples):
            candidates = split["top_ranked"][query_id]
            assert len(candidates) == len(example.candidates)
            assert split["relevant_docs"][query_id] == {candidates[0]: 1}
            assert texts[candidates[0]] == example.positive.text
        assert ("image" in queries.column_names) == any(e.query.scene is not None for e in examples)
