"""A seeded, deterministic generator of compositional shape scenes and image-text tasks shaped like MMEB.

Each image is a PIL drawing of 1-4 coloured shapes on a 2x2 grid. Every object has a shape, a colour, a size and a
cell; relations ("left of", "above", ...) follow from the cells, and counts from the objects. Captions, questions
and referring expressions come from templates over that structure, so the truth of any text about any image is
decidable, and *hard negatives* are built by one edit that makes a true text false:

- a caption negative changes one colour, shape or size of a mentioned object, the relation, the count, or swaps
  the colours of the two mentioned objects ("a red circle left of a blue square" against "a blue circle left of a
  red square");
- an image negative changes one attribute of one object, swaps the colours or the positions of two objects, or
  adds or removes one object, and is kept only if the query's caption is false for it.

Five task families mirror MMEB's meta tasks:

======================  ==========================================  ======================================
family (MMEB subset)     query                                       candidates (the first is the positive)
======================  ==========================================  ======================================
``t2i`` (ShapesT2I)      caption                                     images: 1 + hard negatives + others
``i2t`` (ShapesI2T)      image                                       captions: 1 + hard negatives + others
``classification``       image of 1-4 identical shapes               every label "<count> <colour> <shape>s"
``vqa``                  image + question                            every answer of the question's type
``grounding``            image + "the shape in the top left", ...    object descriptions
======================  ==========================================  ======================================

Everything is a pure function of ``(seed, family, split, index)``: :func:`generate_split` gives the same
examples, and :func:`export_mmeb` the same bytes, on every run. The train split draws from a different random
stream than the test split.

Example:
    >>> from metaembed.data.compositional import generate_split, export_mmeb
    >>> examples = generate_split("t2i", "test", 4, seed=0)
    >>> examples[0].query.text.startswith("Find an image that matches the given caption: ")
    True
    >>> parse_caption(examples[0].query.text).holds(examples[0].positive.scene)
    True
    >>> export_mmeb({"t2i": examples}, "shapes-mmeb")  # doctest: +SKIP
    {'t2i': PosixPath('shapes-mmeb/ShapesT2I/test-00000-of-00001.parquet')}
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import math
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------- vocabulary
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 135, 20),
    "yellow": (235, 205, 20),
    "green": (35, 160, 45),
    "cyan": (20, 200, 215),
    "blue": (35, 70, 225),
    "purple": (140, 45, 175),
    "black": (20, 20, 20),
}
SIZES: tuple[str, ...] = ("small", "large")
# Radius of a shape as a fraction of its cell's edge.
SIZE_RADIUS: dict[str, float] = {"small": 0.17, "large": 0.34}
GRID = 2
CELL_NAMES: dict[tuple[int, int], str] = {
    (0, 0): "top left",
    (0, 1): "top right",
    (1, 0): "bottom left",
    (1, 1): "bottom right",
}
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
CONVERSE: dict[str, str] = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
COUNT_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four")
MAX_OBJECTS = 4
DEFAULT_IMAGE_SIZE = 112  # 8x8 patches of 14 px, 16 visual tokens after Qwen2.5-VL's 2x2 merge

FAMILIES: tuple[str, ...] = ("t2i", "i2t", "classification", "vqa", "grounding")
SUBSET_NAMES: dict[str, str] = {
    "t2i": "ShapesT2I",
    "i2t": "ShapesI2T",
    "classification": "ShapesClassification",
    "vqa": "ShapesVQA",
    "grounding": "ShapesGrounding",
}
# MMEB's meta task of each family (retrieval covers both directions).
META_TASKS: dict[str, str] = {
    "t2i": "Retrieval",
    "i2t": "Retrieval",
    "classification": "Classification",
    "vqa": "VQA",
    "grounding": "Visual Grounding",
}
SPLITS: tuple[str, ...] = ("train", "test")

# Task instructions, phrased like MMEB's; they are part of the query or candidate text, as in MMEB-eval.
T2I_INSTRUCTION = "Find an image that matches the given caption: "
I2T_INSTRUCTION = "Find a caption for the shapes in the given image."
CLASSIFICATION_INSTRUCTION = "Represent the given image for classification."
VQA_INSTRUCTION = "Represent the given image with the following question: "
GROUNDING_INSTRUCTION = "Select the object in the image that the expression refers to: "
IMAGE_CANDIDATE_TEXT = "Represent the given image."
MMEB_IMAGE_MARKER = "<|image_1|>\n"
PARQUET_NAME = "test-00000-of-00001.parquet"
IMAGES_DIR = "images"

# Candidate list sizes (the positive included) for the families whose candidates are not a fixed label set.
RETRIEVAL_HARD_NEGATIVES = 3
RETRIEVAL_CANDIDATES = 24
GROUNDING_CANDIDATES = 10
DISTRACTOR_DRAWS = 100


# ---------------------------------------------------------------------------------------------------- structure
@dataclass(frozen=True)
class ShapeObject:
    """One shape in a scene.

    Attributes:
        shape: One of :data:`SHAPES`.
        colour: One of :data:`COLOURS`.
        size: One of :data:`SIZES`.
        row: Grid row, 0 (top) or 1 (bottom).
        col: Grid column, 0 (left) or 1 (right).
        dx: Horizontal jitter of the centre within its cell, as a fraction of the free margin in ``[-1, 1]``.
        dy: Vertical jitter, likewise.
    """

    shape: str
    colour: str
    size: str
    row: int
    col: int
    dx: float = 0.0
    dy: float = 0.0

    @property
    def phrase(self) -> ObjectPhrase:
        """The object's description, without its position."""
        return ObjectPhrase(self.size, self.colour, self.shape)


@dataclass(frozen=True)
class Scene:
    """An image's content: up to four objects, at most one per grid cell.

    Example:
        >>> scene = Scene((ShapeObject("circle", "red", "small", 0, 0),))
        >>> scene.render(56).size
        (56, 56)
    """

    objects: tuple[ShapeObject, ...]

    def __post_init__(self) -> None:
        cells = [(o.row, o.col) for o in self.objects]
        if not 1 <= len(cells) <= MAX_OBJECTS:
            raise ValueError(f"A scene holds 1..{MAX_OBJECTS} objects, got {len(cells)}.")
        if len(set(cells)) != len(cells):
            raise ValueError(f"Two objects share a grid cell in {cells}.")

    @property
    def key(self) -> str:
        """A stable 16-hex identifier of the scene (its file name on export)."""
        return hashlib.sha1(repr(self).encode()).hexdigest()[:16]

    def count(self, shape: str | None = None, colour: str | None = None) -> int:
        """Number of objects with the given shape and/or colour (all objects when both are None)."""
        return sum(
            (shape is None or o.shape == shape) and (colour is None or o.colour == colour)
            for o in self.objects
        )

    def render(self, image_size: int = DEFAULT_IMAGE_SIZE) -> Any:
        """Draws the scene on a white square of ``image_size`` pixels; returns a PIL RGB image."""
        from PIL import Image, ImageDraw

        image = Image.new("RGB", (image_size, image_size), (255, 255, 255))
        draw = ImageDraw.Draw(image)
        cell = image_size / GRID
        for obj in self.objects:
            radius = SIZE_RADIUS[obj.size] * cell
            margin = max(0.0, cell / 2 - radius - 0.06 * cell)
            cx = (obj.col + 0.5) * cell + obj.dx * margin
            cy = (obj.row + 0.5) * cell + obj.dy * margin
            _draw_shape(draw, obj.shape, cx, cy, radius, COLOURS[obj.colour])
        return image


def _draw_shape(draw: Any, shape: str, cx: float, cy: float, r: float, fill: tuple[int, int, int]) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        s = r * 0.85
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r * 0.75, cy), (cx, cy + r), (cx - r * 0.75, cy)], fill=fill)
    elif shape == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else r * 0.42
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        draw.polygon(points, fill=fill)
    elif shape == "cross":
        w = r * 0.34
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)
    else:
        raise ValueError(f"Unknown shape {shape!r}; choose one of {SHAPES}.")


@dataclass(frozen=True)
class ObjectPhrase:
    """A description of one object: ``"a small red circle"``."""

    size: str
    colour: str
    shape: str

    @property
    def text(self) -> str:
        return f"a {self.size} {self.colour} {self.shape}"

    def matches(self, obj: ShapeObject) -> bool:
        return (obj.size, obj.colour, obj.shape) == (self.size, self.colour, self.shape)


@dataclass(frozen=True)
class Caption:
    """A scene caption: the object count, then one object or a related pair.

    Example:
        >>> Caption(2, ObjectPhrase("small", "red", "circle"), "left of", ObjectPhrase("large", "blue", "square")).text
        'two shapes: a small red circle left of a large blue square'
    """

    count: int
    first: ObjectPhrase
    relation: str | None = None
    second: ObjectPhrase | None = None

    @property
    def text(self) -> str:
        head = f"{COUNT_WORDS[self.count]} shape{'s' if self.count != 1 else ''}: {self.first.text}"
        if self.relation is None or self.second is None:
            return head
        return f"{head} {self.relation} {self.second.text}"

    def holds(self, scene: Scene) -> bool:
        """Whether the caption is true of ``scene``."""
        if scene.count() != self.count:
            return False
        if self.relation is None or self.second is None:
            return any(self.first.matches(o) for o in scene.objects)
        return any(
            self.first.matches(a) and self.second.matches(b) and relation_holds(self.relation, a, b)
            for a, b in itertools.permutations(scene.objects, 2)
        )


def parse_caption(text: str) -> Caption:
    """Reads a caption written by :attr:`Caption.text` back into its structure (a t2i query's instruction allowed).

    Example:
        >>> parse_caption("two shapes: a small red circle above a large blue star").relation
        'above'
    """
    body = text.removeprefix(T2I_INSTRUCTION)
    try:
        head, rest = body.split(": ", 1)
        count = COUNT_WORDS.index(head.split()[0])
        words = rest.split()
        first = ObjectPhrase(*words[1:4])
        if len(words) == 4:
            return Caption(count, first)
        relation = " ".join(words[4:-4])
        second = ObjectPhrase(*words[-3:])
    except (ValueError, IndexError, TypeError) as error:
        raise ValueError(f"Not a shape caption: {text!r}") from error
    if relation not in RELATIONS:
        raise ValueError(f"Not a shape caption (unknown relation {relation!r}): {text!r}")
    return Caption(count, first, relation, second)


def relation_holds(relation: str, a: ShapeObject, b: ShapeObject) -> bool:
    """Whether ``a`` is ``relation`` ``b`` on the grid ("left of": a strictly smaller column, ...)."""
    if relation == "left of":
        return a.col < b.col
    if relation == "right of":
        return a.col > b.col
    if relation == "above":
        return a.row < b.row
    if relation == "below":
        return a.row > b.row
    raise ValueError(f"Unknown relation {relation!r}; choose one of {RELATIONS}.")


# ---------------------------------------------------------------------------------------------------- items
@dataclass(frozen=True)
class Item:
    """One side of a task: text (``""`` for none) and/or a scene (``None`` for no image)."""

    text: str = ""
    scene: Scene | None = None

    @property
    def key(self) -> tuple[str, str]:
        """Identity used to de-duplicate candidates: ``(text, scene key or "")``."""
        return self.text, self.scene.key if self.scene is not None else ""

    def to_input(self, image_size: int = DEFAULT_IMAGE_SIZE) -> str | dict[str, Any]:
        """The item as a MetaEmbed processor input: a string, or ``{"text", "image"}`` with a rendered image."""
        if self.scene is None:
            return self.text
        return {"text": self.text or None, "image": self.scene.render(image_size)}


@dataclass(frozen=True)
class Example:
    """A query with its candidates: the positive first, then ``num_hard`` hard negatives, then the rest."""

    family: str
    query: Item
    candidates: tuple[Item, ...]
    num_hard: int

    @property
    def positive(self) -> Item:
        return self.candidates[0]

    @property
    def hard_negatives(self) -> tuple[Item, ...]:
        return self.candidates[1 : 1 + self.num_hard]


# ---------------------------------------------------------------------------------------------------- sampling
def _rng(seed: int, *parts: Any) -> random.Random:
    # A string seed is hashed with SHA-512 by `random.seed`: stable across processes and PYTHONHASHSEED.
    return random.Random("/".join(map(str, (seed, *parts))))


def _jitter(rng: random.Random) -> float:
    return round(rng.uniform(-1.0, 1.0), 3)


def sample_scene(rng: random.Random, min_objects: int = 1, max_objects: int = MAX_OBJECTS) -> Scene:
    """A scene of ``min_objects..max_objects`` objects with independent random attributes, one per cell."""
    n = rng.randint(min_objects, max_objects)
    cells = rng.sample(sorted(CELL_NAMES), n)
    objects = [
        ShapeObject(
            rng.choice(SHAPES),
            rng.choice(sorted(COLOURS)),
            rng.choice(SIZES),
            r,
            c,
            _jitter(rng),
            _jitter(rng),
        )
        for r, c in sorted(cells)
    ]
    return Scene(tuple(objects))


def sample_caption(rng: random.Random, scene: Scene) -> Caption:
    """A true caption of ``scene``: one object for a single-object scene, otherwise a related pair."""
    objects = scene.objects
    if len(objects) == 1:
        return Caption(1, objects[0].phrase)
    pairs = [
        (a, b, rel)
        for a, b in itertools.permutations(objects, 2)
        for rel in RELATIONS
        if relation_holds(rel, a, b)
    ]
    a, b, rel = rng.choice(pairs)
    return Caption(len(objects), a.phrase, rel, b.phrase)


# ---------------------------------------------------------------------------------------------------- edits
def _phrase_edits(phrase: ObjectPhrase) -> list[tuple[str, ObjectPhrase]]:
    edits = [("colour", dataclasses.replace(phrase, colour=c)) for c in sorted(COLOURS) if c != phrase.colour]
    edits += [("shape", dataclasses.replace(phrase, shape=s)) for s in SHAPES if s != phrase.shape]
    edits += [("size", dataclasses.replace(phrase, size=s)) for s in SIZES if s != phrase.size]
    return edits


def caption_edits(caption: Caption) -> list[tuple[str, Caption]]:
    """Every caption one edit away from ``caption``, with the edit's kind.

    Kinds: ``colour``, ``shape``, ``size`` (of the first or second object), ``relation`` (its converse),
    ``count`` (another count 1..4) and ``swap_colours`` (the two objects exchange colours).
    """
    edits = [(kind, dataclasses.replace(caption, first=p)) for kind, p in _phrase_edits(caption.first)]
    edits += [
        ("count", dataclasses.replace(caption, count=n))
        for n in range(1, MAX_OBJECTS + 1)
        if n != caption.count
    ]
    if caption.relation is not None and caption.second is not None:
        edits += [(kind, dataclasses.replace(caption, second=p)) for kind, p in _phrase_edits(caption.second)]
        edits.append(("relation", dataclasses.replace(caption, relation=CONVERSE[caption.relation])))
        if caption.first.colour != caption.second.colour:
            edits.append(
                (
                    "swap_colours",
                    dataclasses.replace(
                        caption,
                        first=dataclasses.replace(caption.first, colour=caption.second.colour),
                        second=dataclasses.replace(caption.second, colour=caption.first.colour),
                    ),
                )
            )
    return edits


def caption_edit_kind(original: Caption, edited: Caption) -> str | None:
    """The kind of the single edit that turns ``original`` into ``edited``, or None if it is not one edit.

    Example:
        >>> red, blue = ObjectPhrase("small", "red", "circle"), ObjectPhrase("small", "blue", "square")
        >>> caption_edit_kind(Caption(2, red, "above", blue), Caption(2, red, "below", blue))
        'relation'
    """

    def fields(c: Caption) -> dict[str, Any]:
        out: dict[str, Any] = {"count": c.count, "relation": c.relation}
        for name, phrase in (("first", c.first), ("second", c.second)):
            for attribute in ("size", "colour", "shape"):
                out[f"{name}.{attribute}"] = getattr(phrase, attribute) if phrase is not None else None
        return out

    a, b = fields(original), fields(edited)
    changed = sorted(name for name in a if a[name] != b[name])
    if len(changed) == 1:
        name = changed[0]
        return name.split(".")[-1] if "." in name else name
    if (
        changed == ["first.colour", "second.colour"]
        and a["first.colour"] == b["second.colour"]
        and a["second.colour"] == b["first.colour"]
    ):
        return "swap_colours"
    return None


def scene_edits(scene: Scene, rng: random.Random) -> list[tuple[str, Scene]]:
    """Every scene one edit away from ``scene`` (added objects get random jitter from ``rng``).

    Kinds: ``colour``, ``shape``, ``size`` of one object; ``swap_colours`` of two objects of different colours;
    ``swap_positions`` of two objects of different shape or size; ``remove_object`` (scenes of 2+ objects);
    ``add_object`` in a free cell.
    """
    objects = list(scene.objects)
    edits: list[tuple[str, Scene]] = []

    def replaced(index: int, obj: ShapeObject) -> Scene:
        return Scene(tuple(obj if i == index else o for i, o in enumerate(objects)))

    for i, obj in enumerate(objects):
        for colour in sorted(COLOURS):
            if colour != obj.colour:
                edits.append(("colour", replaced(i, dataclasses.replace(obj, colour=colour))))
        for shape in SHAPES:
            if shape != obj.shape:
                edits.append(("shape", replaced(i, dataclasses.replace(obj, shape=shape))))
        for size in SIZES:
            if size != obj.size:
                edits.append(("size", replaced(i, dataclasses.replace(obj, size=size))))
    for i, j in itertools.combinations(range(len(objects)), 2):
        a, b = objects[i], objects[j]
        if a.colour != b.colour:
            swapped = [dataclasses.replace(a, colour=b.colour), dataclasses.replace(b, colour=a.colour)]
            edits.append(("swap_colours", _with(objects, {i: swapped[0], j: swapped[1]})))
        if (a.shape, a.size) != (b.shape, b.size):
            # Objects alike but for colour swapping places is the colour swap above.
            moved = {
                i: dataclasses.replace(a, row=b.row, col=b.col, dx=b.dx, dy=b.dy),
                j: dataclasses.replace(b, row=a.row, col=a.col, dx=a.dx, dy=a.dy),
            }
            edits.append(("swap_positions", _with(objects, moved, sort=True)))
    if len(objects) > 1:
        for i in range(len(objects)):
            edits.append(("remove_object", Scene(tuple(o for k, o in enumerate(objects) if k != i))))
    free = [cell for cell in sorted(CELL_NAMES) if cell not in {(o.row, o.col) for o in objects}]
    if free:
        r, c = rng.choice(free)
        new = ShapeObject(
            rng.choice(SHAPES),
            rng.choice(sorted(COLOURS)),
            rng.choice(SIZES),
            r,
            c,
            _jitter(rng),
            _jitter(rng),
        )
        edits.append(("add_object", Scene(tuple(sorted([*objects, new], key=lambda o: (o.row, o.col))))))
    return edits


def _with(objects: list[ShapeObject], replacements: Mapping[int, ShapeObject], sort: bool = False) -> Scene:
    new = [replacements.get(i, o) for i, o in enumerate(objects)]
    if sort:
        new.sort(key=lambda o: (o.row, o.col))
    return Scene(tuple(new))


def scene_edit_kind(original: Scene, edited: Scene) -> str | None:
    """The kind of the single edit that turns ``original`` into ``edited``, or None if it is not one edit.

    Objects are compared by cell, so a position swap shows as two cells whose objects exchanged everything but
    their position.
    """
    a = {(o.row, o.col): o for o in original.objects}
    b = {(o.row, o.col): o for o in edited.objects}
    if set(a) != set(b):
        if set(b) > set(a) and len(b) == len(a) + 1 and all(a[k] == b[k] for k in a):
            return "add_object"
        if set(a) > set(b) and len(a) == len(b) + 1 and all(a[k] == b[k] for k in b):
            return "remove_object"
        return None
    changed = [k for k in a if a[k] != b[k]]

    def identity(o: ShapeObject) -> tuple[str, str, str]:
        return o.shape, o.colour, o.size

    if len(changed) == 1:
        x, y = a[changed[0]], b[changed[0]]
        diffs = [f for f in ("shape", "colour", "size", "dx", "dy") if getattr(x, f) != getattr(y, f)]
        return diffs[0] if len(diffs) == 1 and diffs[0] in ("shape", "colour", "size") else None
    if len(changed) == 2:
        k1, k2 = changed
        x1, x2, y1, y2 = a[k1], a[k2], b[k1], b[k2]
        if (
            (y1.shape, y1.size, y1.dx, y1.dy) == (x1.shape, x1.size, x1.dx, x1.dy)
            and (y2.shape, y2.size, y2.dx, y2.dy) == (x2.shape, x2.size, x2.dx, x2.dy)
            and (y1.colour, y2.colour) == (x2.colour, x1.colour)
        ):
            return "swap_colours"
        if identity(y1) == identity(x2) and identity(y2) == identity(x1):
            return "swap_positions"
    return None


# ---------------------------------------------------------------------------------------------------- families
def pick_by_kind(edits: Sequence[tuple[str, Any]], k: int, rng: random.Random) -> list[Any]:
    """Up to ``k`` edits spread over their kinds: kinds in random order, round robin, a random edit of each.

    Drawing uniformly over edits would mostly change colours and shapes (7 and 5 alternatives each) and rarely the
    relation or the binding of colours to shapes (one alternative each), the very detail hard negatives are for.
    """
    by_kind: dict[str, list[Any]] = {}
    for kind, edit in edits:
        by_kind.setdefault(kind, []).append(edit)
    kinds = sorted(by_kind)
    rng.shuffle(kinds)
    for kind in kinds:
        rng.shuffle(by_kind[kind])
    picked: list[Any] = []
    while len(picked) < k and any(by_kind.values()):
        for kind in kinds:
            if by_kind[kind] and len(picked) < k:
                picked.append(by_kind[kind].pop())
    return picked


def _t2i_or_i2t(rng: random.Random, family: str) -> tuple[Item, Item, list[Item], Caption, Scene]:
    scene = sample_scene(rng)
    caption = sample_caption(rng, scene)
    if family == "t2i":
        scenes = [(kind, s) for kind, s in scene_edits(scene, rng) if not caption.holds(s)]
        hard = [Item(IMAGE_CANDIDATE_TEXT, s) for s in pick_by_kind(scenes, RETRIEVAL_HARD_NEGATIVES, rng)]
        return Item(T2I_INSTRUCTION + caption.text), Item(IMAGE_CANDIDATE_TEXT, scene), hard, caption, scene
    captions = [(kind, c) for kind, c in caption_edits(caption) if not c.holds(scene)]
    hard = [Item(c.text) for c in pick_by_kind(captions, RETRIEVAL_HARD_NEGATIVES, rng)]
    return Item(I2T_INSTRUCTION, scene), Item(caption.text), hard, caption, scene


def _retrieval_examples(family: str, n: int, seed: int, split: str) -> list[Example]:
    drafts = [_t2i_or_i2t(_rng(seed, family, split, i), family) for i in range(n)]
    examples = []
    for i, (query, positive, hard, caption, scene) in enumerate(drafts):
        rng = _rng(seed, family, split, i, "distractors")
        taken = {positive.key, *(h.key for h in hard)}
        others: list[Item] = []
        # A bounded draw keeps generation linear in n; nearly every draw is false for the query, so it fills.
        for j in rng.sample(range(n), min(n, DISTRACTOR_DRAWS)):
            if len(hard) + len(others) + 1 >= RETRIEVAL_CANDIDATES:
                break
            other_positive, other_caption, other_scene = drafts[j][1], drafts[j][3], drafts[j][4]
            # An "other" candidate must be false for this query: a caption false of this image, or an image of
            # which this caption is false.
            false = not caption.holds(other_scene) if family == "t2i" else not other_caption.holds(scene)
            if false and other_positive.key not in taken:
                taken.add(other_positive.key)
                others.append(other_positive)
        examples.append(Example(family, query, (positive, *hard, *others), len(hard)))
    return examples


def classification_label(count: int, colour: str, shape: str) -> str:
    """``"three red circles"``: the label of an image of ``count`` objects of one colour and shape."""
    plural = "" if count == 1 else ("es" if shape.endswith("s") else "s")
    return f"{COUNT_WORDS[count]} {colour} {shape}{plural}"


CLASSIFICATION_LABELS: tuple[tuple[int, str, str], ...] = tuple(
    (n, c, s) for n in range(1, MAX_OBJECTS + 1) for c in sorted(COLOURS) for s in SHAPES
)


def _classification_example(rng: random.Random) -> Example:
    n, colour, shape = rng.randint(1, MAX_OBJECTS), rng.choice(sorted(COLOURS)), rng.choice(SHAPES)
    cells = sorted(rng.sample(sorted(CELL_NAMES), n))
    scene = Scene(
        tuple(
            ShapeObject(shape, colour, rng.choice(SIZES), r, c, _jitter(rng), _jitter(rng)) for r, c in cells
        )
    )
    truth = (n, colour, shape)
    hard = [label for label in CLASSIFICATION_LABELS if sum(x != y for x, y in zip(label, truth)) == 1]
    rest = [label for label in CLASSIFICATION_LABELS if label != truth and label not in hard]
    labels = [truth, *hard, *rest]
    candidates = tuple(Item(classification_label(*label)) for label in labels)
    return Example("classification", Item(CLASSIFICATION_INSTRUCTION, scene), candidates, len(hard))


def _vqa_questions(scene: Scene) -> list[tuple[str, str, tuple[str, ...]]]:
    """Every ``(question, answer, answer set)`` the templates can ask of ``scene``, each with one true answer."""
    colours, counts = tuple(sorted(COLOURS)), COUNT_WORDS
    questions = []
    for shape in SHAPES:
        matching = [o for o in scene.objects if o.shape == shape]
        if len(matching) == 1:
            questions.append((f"What colour is the {shape}?", matching[0].colour, colours))
        questions.append(
            (
                f"How many {shape}s are there?" if shape != "cross" else "How many crosses are there?",
                counts[scene.count(shape=shape)],
                counts,
            )
        )
    for colour in colours:
        matching = [o for o in scene.objects if o.colour == colour]
        if len(matching) == 1:
            questions.append((f"What shape is the {colour} object?", matching[0].shape, SHAPES))
        questions.append((f"How many {colour} shapes are there?", counts[scene.count(colour=colour)], counts))
    for ref in scene.objects:
        if sum(ref.phrase.matches(o) for o in scene.objects) != 1:
            continue
        for relation in RELATIONS:
            related = [o for o in scene.objects if o is not ref and relation_holds(relation, o, ref)]
            if len(related) == 1:
                text = f"What colour is the shape {relation} the {ref.phrase.text[2:]}?"
                questions.append((text, related[0].colour, colours))
    return questions


def _vqa_example(rng: random.Random) -> Example:
    scene = sample_scene(rng)
    questions = _vqa_questions(scene)
    # Draw the question type first (colour, shape, count, relational colour), then a question of that type, so
    # the frequent count questions do not crowd out the rest.
    by_type: dict[str, list[tuple[str, str, tuple[str, ...]]]] = {}
    for q in questions:
        kind = "relation" if " the shape " in q[0] else q[0].split()[0] + q[0].split()[1]
        by_type.setdefault(kind, []).append(q)
    question, answer, answer_set = rng.choice(by_type[rng.choice(sorted(by_type))])
    others = [a for a in answer_set if a != answer]
    return Example(
        "vqa", Item(VQA_INSTRUCTION + question, scene), (Item(answer), *map(Item, others)), len(others)
    )


def _grounding_example(rng: random.Random) -> Example:
    while True:
        scene = sample_scene(rng, min_objects=2)
        unique = [o for o in scene.objects if sum(o.phrase.matches(x) for x in scene.objects) == 1]
        expressions = [(f"the shape in the {CELL_NAMES[(o.row, o.col)]}", o) for o in unique]
        for ref in unique:
            for relation in RELATIONS:
                related = [o for o in unique if o is not ref and relation_holds(relation, o, ref)]
                if len(related) == 1:
                    expressions.append((f"the shape {relation} the {ref.phrase.text[2:]}", related[0]))
        if expressions:
            break
    expression, target = rng.choice(expressions)
    positive = Item(target.phrase.text)
    seen = {positive.key}
    hard = []
    for other in scene.objects:
        item = Item(other.phrase.text)
        if item.key not in seen:  # two alike objects (not the target) describe the same way
            seen.add(item.key)
            hard.append(item)
    edits = [Item(p.text) for _, p in _phrase_edits(target.phrase)]
    rng.shuffle(edits)
    fill = []
    for item in edits:
        if len(hard) + len(fill) + 1 >= GROUNDING_CANDIDATES:
            break
        if item.key not in seen:
            seen.add(item.key)
            fill.append(item)
    # Other objects of the same image and one-edit descriptions of the target are both hard negatives.
    candidates = (positive, *hard, *fill)
    return Example(
        "grounding", Item(GROUNDING_INSTRUCTION + expression, scene), candidates, len(candidates) - 1
    )


def generate_split(family: str, split: str, n: int, seed: int = 0) -> list[Example]:
    """``n`` examples of one task family and split, a pure function of its arguments.

    Args:
        family: One of :data:`FAMILIES`.
        split: ``"train"`` or ``"test"``; each split draws from its own random stream.
        n: Number of examples.
        seed: Dataset seed.

    Returns:
        Examples whose candidates start with the positive, then the hard negatives.

    Example:
        >>> [len(e.candidates) for e in generate_split("classification", "test", 2)]
        [192, 192]
    """
    if family not in FAMILIES:
        raise ValueError(f"Unknown task family {family!r}; choose one of {FAMILIES}.")
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; choose one of {SPLITS}.")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    if family in ("t2i", "i2t"):
        return _retrieval_examples(family, n, seed, split)
    build = {"classification": _classification_example, "vqa": _vqa_example, "grounding": _grounding_example}
    return [build[family](_rng(seed, family, split, i)) for i in range(n)]


def generate_dataset(
    n_per_family: int | Mapping[str, int], split: str, seed: int = 0, families: Sequence[str] = FAMILIES
) -> dict[str, list[Example]]:
    """Examples of several families: ``{family: generate_split(family, split, n, seed)}``."""
    counts = n_per_family if isinstance(n_per_family, Mapping) else dict.fromkeys(families, n_per_family)
    return {family: generate_split(family, split, counts[family], seed) for family in families}


# ---------------------------------------------------------------------------------------------------- vocabulary
def vocabulary_texts() -> list[str]:
    """Strings covering every word the generator can write (for building a word-level tokenizer)."""
    texts = [
        T2I_INSTRUCTION,
        I2T_INSTRUCTION,
        CLASSIFICATION_INSTRUCTION,
        VQA_INSTRUCTION,
        GROUNDING_INSTRUCTION,
        IMAGE_CANDIDATE_TEXT,
        "What colour is the shape? What shape is the object? How many shapes are there? crosses",
        "one shape: a the in",
        *COUNT_WORDS,
        *SHAPES,
        *(f"{shape}s" for shape in SHAPES),
        *COLOURS,
        *SIZES,
        *RELATIONS,
        *CELL_NAMES.values(),
    ]
    texts += [classification_label(*label) for label in CLASSIFICATION_LABELS]
    return texts


# ---------------------------------------------------------------------------------------------------- export
def export_mmeb(
    examples: Mapping[str, Sequence[Example]],
    root: str | os.PathLike,
    image_size: int = DEFAULT_IMAGE_SIZE,
) -> dict[str, Path]:
    """Writes test examples in MMEB-eval's layout, which MMEB loaders read unchanged.

    ``root/<Subset>/test-00000-of-00001.parquet`` holds the columns ``qry_text`` (str), ``qry_img_path`` (str),
    ``tgt_text`` (list of str) and ``tgt_img_path`` (list of str); the first target is the positive; ``""`` means
    no image; text that goes with an image starts with ``<|image_1|>\\n``. Images are PNG files under
    ``root/images/<Subset>/<scene key>.png`` and the parquet paths are relative to ``root/images``.

    Args:
        examples: ``{family: examples}``; families map to subset names by :data:`SUBSET_NAMES`.
        root: Output directory (created).
        image_size: Edge of the rendered images in pixels.

    Returns:
        ``{family: parquet path}``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    written: dict[str, Path] = {}
    schema = pa.schema(
        [
            ("qry_text", pa.string()),
            ("qry_img_path", pa.string()),
            ("tgt_text", pa.list_(pa.string())),
            ("tgt_img_path", pa.list_(pa.string())),
        ]
    )
    for family, rows in examples.items():
        if family not in SUBSET_NAMES:
            raise ValueError(f"Unknown task family {family!r}; choose among {FAMILIES}.")
        subset = SUBSET_NAMES[family]
        image_dir = root / IMAGES_DIR / subset
        image_dir.mkdir(parents=True, exist_ok=True)

        def image_path(scene: Scene | None, subset: str = subset, image_dir: Path = image_dir) -> str:
            if scene is None:
                return ""
            file = image_dir / f"{scene.key}.png"
            if not file.exists():
                scene.render(image_size).save(file, format="PNG", optimize=False)
            return f"{subset}/{scene.key}.png"

        def mmeb_text(item: Item) -> str:
            return (MMEB_IMAGE_MARKER + item.text) if item.scene is not None else item.text

        columns: dict[str, list[Any]] = {name: [] for name in schema.names}
        for example in rows:
            columns["qry_text"].append(mmeb_text(example.query))
            columns["qry_img_path"].append(image_path(example.query.scene))
            columns["tgt_text"].append([mmeb_text(c) for c in example.candidates])
            columns["tgt_img_path"].append([image_path(c.scene) for c in example.candidates])
        table = pa.table(columns, schema=schema)
        (root / subset).mkdir(parents=True, exist_ok=True)
        path = root / subset / PARQUET_NAME
        pq.write_table(table, path, compression="snappy")
        written[family] = path
        logger.info("Wrote %d %s queries to %s", len(rows), subset, path)
    return written


def iter_items(examples: Iterable[Example]) -> Iterable[Item]:
    """Every query and candidate item of ``examples``, in order (with repeats)."""
    for example in examples:
        yield example.query
        yield from example.candidates


__all__ = [
    "COLOURS",
    "FAMILIES",
    "META_TASKS",
    "RELATIONS",
    "SHAPES",
    "SIZES",
    "SUBSET_NAMES",
    "Caption",
    "Example",
    "Item",
    "ObjectPhrase",
    "Scene",
    "ShapeObject",
    "caption_edit_kind",
    "caption_edits",
    "classification_label",
    "export_mmeb",
    "generate_dataset",
    "generate_split",
    "iter_items",
    "parse_caption",
    "pick_by_kind",
    "relation_holds",
    "sample_caption",
    "sample_scene",
    "scene_edit_kind",
    "scene_edits",
    "vocabulary_texts",
]
