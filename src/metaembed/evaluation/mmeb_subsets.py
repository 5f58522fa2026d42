"""The 36 subsets of MMEB (Massive Multimodal Embedding Benchmark), as published in ``TIGER-Lab/MMEB-eval``.

Every subset ranks each query against its own list of candidates (the first one is the positive) and is scored with
Precision@1. The subsets fall into four meta tasks (classification, VQA, retrieval, visual grounding) and two domains:
the 20 in-domain (IND) subsets have training splits in MMEB-train, the 16 out-of-domain (OOD) subsets do not.

This module is only data: the table below, and small lookups over it.

Example:
    >>> from metaembed.evaluation.mmeb_subsets import MMEB_SUBSETS, subsets_of
    >>> len(MMEB_SUBSETS)
    36
    >>> [s.name for s in subsets_of(meta_task="Visual Grounding")]
    ['MSCOCO', 'RefCOCO', 'RefCOCO-Matching', 'Visual7W-Pointing']
"""

from __future__ import annotations

from dataclasses import dataclass

MMEB_REPO_ID = "TIGER-Lab/MMEB-eval"
# The dataset commit every MMEB task reads ("Delete wrong image (#2)", 2024-10-28). A local directory passed with
# `data_dir` / METAEMBED_MMEB_DIR is treated as a copy of this revision.
MMEB_REVISION = "2f069730be515ea60778413777816b53e2d2a697"
MMEB_SPLIT = "test"
MMEB_PARQUET_NAME = "test-00000-of-00001.parquet"
META_TASKS = ("Classification", "VQA", "Retrieval", "Visual Grounding")
DOMAINS = ("IND", "OOD")
TASK_NAME_PREFIX = "MMEB-"

MMEB_CITATION = r"""
@article{jiang2024vlm2vec,
  author = {Jiang, Ziyan and Meng, Rui and Yang, Xinyi and Yavuz, Semih and Zhou, Yingbo and Chen, Wenhu},
  journal = {arXiv preprint arXiv:2410.05160},
  title = {VLM2Vec: Training Vision-Language Models for Massive Multimodal Embedding Tasks},
  year = {2024},
}
"""


@dataclass(frozen=True)
class MMEBSubset:
    """One MMEB-eval subset.

    Attributes:
        name: The subset (folder) name in ``TIGER-Lab/MMEB-eval``, e.g. ``"ImageNet-1K"``.
        meta_task: One of :data:`META_TASKS`.
        domain: ``"IND"`` (in-domain) or ``"OOD"`` (out-of-domain).
        category: The mteb category, ``<query modalities>2<candidate modalities>`` with ``t`` for text and ``i`` for
            image (``"it2t"``: image and text queries, text candidates). MMEB text always carries the instruction, so
            every side has text.
        instruction: The task instruction MMEB writes at the start of every query text of this subset. The data keeps
            it inline; this copy documents the task and is checked against the data when it loads.
        description: One line on what the subset asks.
    """

    name: str
    meta_task: str
    domain: str
    category: str
    instruction: str
    description: str

    @property
    def task_name(self) -> str:
        """The mteb task name, e.g. ``"MMEB-ImageNet-1K"``."""
        return TASK_NAME_PREFIX + self.name

    @property
    def query_has_image(self) -> bool:
        return "i" in self.category.split("2")[0]

    @property
    def candidate_has_image(self) -> bool:
        return "i" in self.category.split("2")[1]


def _s(
    name: str, meta_task: str, domain: str, category: str, instruction: str, description: str
) -> MMEBSubset:
    return MMEBSubset(name, meta_task, domain, category, instruction, description)


_CLS, _VQA, _RET, _VG = META_TASKS
_VQA_INSTRUCTION = "Represent the given image with the following question:"

MMEB_SUBSETS: tuple[MMEBSubset, ...] = (
    # Classification: an image (and for N24News its caption) against the label set.
    _s(
        "ImageNet-1K",
        _CLS,
        "IND",
        "it2t",
        "Represent the given image for classification",
        "ImageNet object classes.",
    ),
    _s(
        "N24News",
        _CLS,
        "IND",
        "it2t",
        "Represent the given news image with the following caption for domain classification:",
        "News domain of an image and its caption.",
    ),
    _s(
        "HatefulMemes",
        _CLS,
        "IND",
        "it2t",
        "Represent the given image for binary classification to determine whether it constitutes hateful speech or not",
        "Whether a meme is hateful.",
    ),
    _s(
        "VOC2007", _CLS, "IND", "it2t", "Identify the object shown in the image", "PASCAL VOC object classes."
    ),
    _s("SUN397", _CLS, "IND", "it2t", "Identify the scene shown in the image", "SUN397 scene classes."),
    _s("Place365", _CLS, "OOD", "it2t", "Identify the scene shown in the image", "Places365 scene classes."),
    _s(
        "ImageNet-A",
        _CLS,
        "OOD",
        "it2t",
        "Represent the given image for classification",
        "Adversarial ImageNet.",
    ),
    _s(
        "ImageNet-R",
        _CLS,
        "OOD",
        "it2t",
        "Represent the given image for classification",
        "ImageNet renditions.",
    ),
    _s(
        "ObjectNet",
        _CLS,
        "OOD",
        "it2t",
        "Identify the object shown in the image",
        "ObjectNet object classes.",
    ),
    _s(
        "Country211", _CLS, "OOD", "it2t", "Identify the country depicted in the image", "Country of a photo."
    ),
    # VQA: an image and a question against candidate answers.
    _s("OK-VQA", _VQA, "IND", "it2t", _VQA_INSTRUCTION, "Knowledge-based visual questions."),
    _s("A-OKVQA", _VQA, "IND", "it2t", _VQA_INSTRUCTION, "Augmented knowledge-based visual questions."),
    _s("DocVQA", _VQA, "IND", "it2t", _VQA_INSTRUCTION, "Questions on document images."),
    _s("InfographicsVQA", _VQA, "IND", "it2t", _VQA_INSTRUCTION, "Questions on infographics."),
    _s("ChartQA", _VQA, "IND", "it2t", _VQA_INSTRUCTION, "Questions on charts."),
    _s("Visual7W", _VQA, "IND", "it2t", _VQA_INSTRUCTION, "Telling questions on everyday images."),
    _s("ScienceQA", _VQA, "OOD", "it2t", _VQA_INSTRUCTION, "Science questions with diagrams."),
    _s("VizWiz", _VQA, "OOD", "it2t", _VQA_INSTRUCTION, "Questions from blind users' photos."),
    _s("GQA", _VQA, "OOD", "it2t", _VQA_INSTRUCTION, "Compositional scene questions."),
    _s("TextVQA", _VQA, "OOD", "it2t", _VQA_INSTRUCTION, "Questions that need reading text in images."),
    # Retrieval: text, image or both against a pool of candidates.
    _s(
        "VisDial",
        _RET,
        "IND",
        "t2it",
        "Represent the given dialogue about an image, which is used for image retrieval:",
        "Dialogue to image.",
    ),
    _s(
        "CIRR",
        _RET,
        "IND",
        "it2it",
        "Given an image, find a similar everyday image with the described changes:",
        "Composed image retrieval.",
    ),
    _s(
        "VisualNews_t2i",
        _RET,
        "IND",
        "t2it",
        "Retrieve an image of this news caption.",
        "News caption to image.",
    ),
    _s(
        "VisualNews_i2t",
        _RET,
        "IND",
        "it2t",
        "Find a caption for the news in the given photo.",
        "News image to caption.",
    ),
    _s(
        "MSCOCO_t2i",
        _RET,
        "IND",
        "t2it",
        "Find me an everyday image that matches the given caption:",
        "COCO caption to image.",
    ),
    _s(
        "MSCOCO_i2t",
        _RET,
        "IND",
        "it2t",
        "Find an image caption describing the given everyday image.",
        "COCO image to caption.",
    ),
    _s(
        "NIGHTS",
        _RET,
        "IND",
        "it2it",
        "Find a day-to-day image that looks similar to the provided image.",
        "Perceptual image similarity.",
    ),
    _s(
        "WebQA",
        _RET,
        "IND",
        "t2it",
        "Find a Wikipedia image that answers this question:",
        "Question to web image.",
    ),
    _s(
        "FashionIQ",
        _RET,
        "OOD",
        "it2it",
        "Find an image to match the fashion image and style note:",
        "Composed fashion retrieval.",
    ),
    _s(
        "Wiki-SS-NQ",
        _RET,
        "OOD",
        "t2it",
        "Find the document screenshot that can answer the given query:",
        "Question to Wikipedia screenshot.",
    ),
    _s(
        "OVEN",
        _RET,
        "OOD",
        "it2it",
        "Retrieve a Wikipedia image-description pair that provides evidence for the question of this image:",
        "Visual entity recognition.",
    ),
    _s(
        "EDIS",
        _RET,
        "OOD",
        "t2it",
        "Find a news image that matches the provided caption:",
        "News caption to image.",
    ),
    # Visual grounding: an image and a referring expression against image crops.
    _s(
        "MSCOCO",
        _VG,
        "IND",
        "it2it",
        "Select the portion of the image that isolates the object of the given label:",
        "COCO object crops.",
    ),
    _s(
        "RefCOCO",
        _VG,
        "OOD",
        "it2it",
        "Select the portion of the image that follows the language expressions.",
        "Referring expression to crop.",
    ),
    _s(
        "RefCOCO-Matching",
        _VG,
        "OOD",
        "it2it",
        "Select the portion of the image that follows the language expressions:",
        "Referring expression matching.",
    ),
    _s(
        "Visual7W-Pointing",
        _VG,
        "OOD",
        "it2it",
        "Select the portion of the image that answers the question:",
        "Pointing answers.",
    ),
)

SUBSETS_BY_NAME: dict[str, MMEBSubset] = {subset.name: subset for subset in MMEB_SUBSETS}


def subsets_of(meta_task: str | None = None, domain: str | None = None) -> list[MMEBSubset]:
    """The subsets of one meta task and/or domain, in MMEB's order.

    Args:
        meta_task: One of :data:`META_TASKS`, or None for all.
        domain: ``"IND"``, ``"OOD"`` or None for both.

    Raises:
        ValueError: for an unknown meta task or domain.
    """
    if meta_task is not None and meta_task not in META_TASKS:
        raise ValueError(f"Unknown MMEB meta task {meta_task!r}; choose one of {META_TASKS}.")
    if domain is not None and domain not in DOMAINS:
        raise ValueError(f"Unknown MMEB domain {domain!r}; choose one of {DOMAINS}.")
    return [
        subset
        for subset in MMEB_SUBSETS
        if (meta_task is None or subset.meta_task == meta_task)
        and (domain is None or subset.domain == domain)
    ]


__all__ = [
    "DOMAINS",
    "META_TASKS",
    "MMEB_CITATION",
    "MMEB_PARQUET_NAME",
    "MMEB_REPO_ID",
    "MMEB_REVISION",
    "MMEB_SPLIT",
    "MMEB_SUBSETS",
    "SUBSETS_BY_NAME",
    "MMEBSubset",
    "subsets_of",
]
