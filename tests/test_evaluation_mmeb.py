"""MMEB as mteb tasks, without a model: the fixture's layout, loading, de-duplication, the tie rule, MMEB's
averages, task-name resolution and bad input."""

from __future__ import annotations

import json
import shutil

import pytest

from metaembed.evaluation.fixtures import write_mmeb_fixture

SUBSETS = ("VOC2007", "MSCOCO_t2i", "RefCOCO")
NUM_CANDIDATES = 24


@pytest.fixture(scope="module")
def mmeb_root(tmp_path_factory):
    return write_mmeb_fixture(tmp_path_factory.mktemp("mmeb"), subsets=SUBSETS, num_candidates=NUM_CANDIDATES)


def test_the_36_subsets_follow_mmeb():
    from metaembed.evaluation.mmeb_subsets import MMEB_REVISION, MMEB_SUBSETS, subsets_of

    assert len(MMEB_SUBSETS) == 36 and len({s.name for s in MMEB_SUBSETS}) == 36
    assert len(subsets_of(domain="IND")) == 20 and len(subsets_of(domain="OOD")) == 16
    counts = {
        m: len(subsets_of(meta_task=m)) for m in ("Classification", "VQA", "Retrieval", "Visual Grounding")
    }
    assert counts == {"Classification": 10, "VQA": 10, "Retrieval": 12, "Visual Grounding": 4}
    assert [s.name for s in subsets_of("Visual Grounding", "OOD")] == [
        "RefCOCO",
        "RefCOCO-Matching",
        "Visual7W-Pointing",
    ]
    assert len(MMEB_REVISION) == 40 and int(MMEB_REVISION, 16) >= 0


def test_fixture_has_mmeb_eval_layout(mmeb_root):
    import pyarrow as pa
    import pyarrow.parquet as pq

    assert sorted(p.name for p in mmeb_root.iterdir()) == sorted([*SUBSETS, "images"])
    for name in SUBSETS:
        table = pq.read_table(mmeb_root / name / "test-00000-of-00001.parquet")
        assert table.schema.names == ["qry_text", "qry_img_path", "tgt_text", "tgt_img_path"]
        assert table.schema.field("tgt_text").type == pa.list_(pa.string())
        rows = table.to_pylist()
        for row in rows:
            assert len(row["tgt_text"]) == len(row["tgt_img_path"]) == NUM_CANDIDATES + 2
            for path in [row["qry_img_path"], *row["tgt_img_path"]]:
                assert path == "" or (mmeb_root / "images" / path).is_file()
    voc = pq.read_table(mmeb_root / "VOC2007" / "test-00000-of-00001.parquet").to_pylist()
    assert voc[0]["qry_text"].startswith("<|image_1|>\n") and voc[0]["qry_img_path"]  # image queries
    coco = pq.read_table(mmeb_root / "MSCOCO_t2i" / "test-00000-of-00001.parquet").to_pylist()
    assert coco[0]["qry_img_path"] == "" and all(coco[0]["tgt_img_path"])  # text queries, image candidates


def test_loading_deduplicates_and_keeps_images_lazy(mmeb_root):
    import datasets

    from metaembed.evaluation.mmeb_data import load_mmeb_subset
    from metaembed.evaluation.mmeb_subsets import SUBSETS_BY_NAME

    split = load_mmeb_subset(SUBSETS_BY_NAME["MSCOCO_t2i"], data_dir=mmeb_root)
    queries, corpus = split["queries"], split["corpus"]
    assert len(queries) == 6 and "image" not in queries.column_names
    assert isinstance(corpus.features["image"], datasets.Image)
    raw = corpus.cast_column("image", datasets.Image(decode=False))
    assert all(cell["bytes"] is None and cell["path"].endswith(".png") for cell in raw["image"])
    assert set(corpus["text"]) == {"Represent the given image."}  # the <|image_1|> placeholder is gone
    assert len(set(zip(corpus["text"], (c["path"] for c in raw["image"])))) == len(corpus)
    for query_id, listed in split["top_ranked"].items():
        assert (
            len(listed) == len(set(listed)) == NUM_CANDIDATES
        )  # the repeated negative and positive are gone
        assert split["relevant_docs"][query_id] == {listed[0]: 1}
    assert queries["text"][0].startswith("Find me an everyday image that matches the given caption: a ")


def test_mteb_breaks_ties_by_descending_document_id():
    """The documented tie rule is mteb's (pytrec_eval's): equal scores rank the larger document id first."""
    from mteb._evaluators.retrieval_metrics import calculate_retrieval_scores

    qrels = {"q": {"c0000001": 1}}
    later_positive = calculate_retrieval_scores({"q": {"c0000001": 0.5, "c0000000": 0.5}}, qrels, [1])
    earlier_positive = calculate_retrieval_scores({"q": {"c0000001": 0.5, "c0000002": 0.5}}, qrels, [1])
    assert later_positive.precision["P@1"] == 1.0
    assert earlier_positive.precision["P@1"] == 0.0


def test_tie_share_is_reported():
    from metaembed.evaluation.mmeb_tasks import get_mmeb_tasks

    task = get_mmeb_tasks(["VOC2007"])[0]
    qrels = {"a": {"p": 1}, "b": {"p": 1}, "c": {"p": 1}}
    results = {"a": {"p": 0.9, "n": 0.9}, "b": {"p": 0.9, "n": 0.1}, "c": {"p": 0.1, "n": 0.9}}
    assert task.task_specific_scores({}, qrels, results, "test", "default") == {"positive_tied_at_top": 1 / 3}


def test_summary_is_unweighted_means():
    from metaembed.evaluation.benchmark import summarize_mmeb

    summary = summarize_mmeb({"MMEB-VOC2007": 0.5, "MSCOCO_t2i": 0.7, "MMEB-RefCOCO": 0.9, "STS12": 0.1})
    assert summary == pytest.approx(
        {
            "Classification": 0.5,
            "Retrieval": 0.7,
            "Visual Grounding": 0.9,
            "IND": 0.6,
            "OOD": 0.9,
            "Overall": 0.7,
        }
    )
    assert list(summary) == ["Classification", "Retrieval", "Visual Grounding", "IND", "OOD", "Overall"]


def test_benchmark_reports_meta_tasks_domains_and_overall():
    from mteb.results import BenchmarkResults, ModelResult, TaskResult

    from metaembed.evaluation.benchmark import get_mmeb_benchmark
    from metaembed.evaluation.mmeb_subsets import META_TASKS, subsets_of

    benchmark = get_mmeb_benchmark()
    assert benchmark.name == "MMEB" and len(benchmark.tasks) == 36
    score = {task.metadata.name: (index + 1) / 100 for index, task in enumerate(benchmark.tasks)}
    results = [
        TaskResult.from_task_results(
            task, {"test": {"default": {"main_score": score[task.metadata.name]}}}, 0.0
        )
        for task in benchmark.tasks
    ]

    def mean(subsets):
        return sum(score[f"MMEB-{s.name}"] for s in subsets) / len(subsets)

    model_result = ModelResult(model_name="acme/m", model_revision="r", task_results=results)
    scores = benchmark.get_score(BenchmarkResults(model_results=[model_result]))["acme/m"]
    assert scores["Mean(Task)"] == pytest.approx(sum(score.values()) / 36)
    for meta_task in META_TASKS:
        assert scores[f"Meta task::{meta_task}"] == pytest.approx(mean(subsets_of(meta_task=meta_task)))
    assert scores["Domain::IND"] == pytest.approx(mean(subsets_of(domain="IND")))
    assert scores["Domain::OOD"] == pytest.approx(mean(subsets_of(domain="OOD")))
    partial = ModelResult(model_name="acme/m", model_revision="r", task_results=results[:-1])
    with pytest.raises(ValueError, match="missing"):
        benchmark.get_score(BenchmarkResults(model_results=[partial]), raise_error=True)


def test_task_names_resolve_and_unknown_names_suggest_close_matches(mmeb_root):
    from metaembed.evaluation.task_selection import resolve_tasks

    tasks = resolve_tasks(
        ["VOC2007", "MMEB-VisualGrounding", "Vidore2ESGReportsHLRetrieval"], mmeb_dir=mmeb_root
    )
    names = [task.metadata.name for task in tasks]
    assert names[:5] == [
        "MMEB-VOC2007",
        "MMEB-MSCOCO",
        "MMEB-RefCOCO",
        "MMEB-RefCOCO-Matching",
        "MMEB-Visual7W-Pointing",
    ]
    assert names[5] == "Vidore2ESGReportsHLRetrieval" and len(resolve_tasks(["ViDoRe(v2)"])) == 4
    assert tasks[0].metadata.main_score == "precision_at_1" and tasks[0].metadata.category == "it2t"
    with pytest.raises(ValueError, match=r"Unknown task or benchmark 'VOC2070'.*VOC2007"):
        resolve_tasks(["VOC2070"])
    with pytest.raises(ValueError, match="Vidore2ESGReportsRetrieval"):
        resolve_tasks(["Vidore2ESGReportRetrieval"])


def test_missing_image_names_the_file_and_the_row(mmeb_root, tmp_path):
    import pyarrow.parquet as pq

    from metaembed.evaluation.mmeb_data import load_mmeb_subset
    from metaembed.evaluation.mmeb_subsets import SUBSETS_BY_NAME

    copy = tmp_path / "mmeb"
    shutil.copytree(mmeb_root, copy)
    rows = pq.read_table(copy / "RefCOCO" / "test-00000-of-00001.parquet").to_pylist()
    victim = rows[3]["tgt_img_path"][5]
    first_row = next(i for i, r in enumerate(rows) if victim in (r["qry_img_path"], *r["tgt_img_path"]))
    (copy / "images" / victim).unlink()
    with pytest.raises(FileNotFoundError) as error:
        load_mmeb_subset(SUBSETS_BY_NAME["RefCOCO"], data_dir=copy)
    message = str(error.value)
    assert str(copy / "images" / victim) in message and f"row {first_row}," in message


def test_missing_subset_and_wrong_side_images_are_clear_errors(mmeb_root, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from metaembed.evaluation.mmeb_data import load_mmeb_subset
    from metaembed.evaluation.mmeb_subsets import SUBSETS_BY_NAME
    from metaembed.evaluation.mmeb_tasks import get_mmeb_tasks

    with pytest.raises(FileNotFoundError, match=r"ImageNet-1K.*test-00000-of-00001.parquet"):
        get_mmeb_tasks(["ImageNet-1K"], data_dir=mmeb_root)[0].check_available()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mmeb_subset(SUBSETS_BY_NAME["VOC2007"], data_dir=tmp_path / "nowhere")
    copy = tmp_path / "mmeb"
    shutil.copytree(mmeb_root, copy)
    path = copy / "VOC2007" / "test-00000-of-00001.parquet"
    table = pq.read_table(path)
    paths = table.column("tgt_img_path").to_pylist()
    paths[1][2] = table.column("qry_img_path")[0].as_py()  # VOC2007 candidates are labels: text only
    pq.write_table(table.set_column(3, "tgt_img_path", pa.array(paths, pa.list_(pa.string()))), path)
    with pytest.raises(ValueError, match=r"row 1, column tgt_img_path\[2\].*'it2t'"):
        load_mmeb_subset(SUBSETS_BY_NAME["VOC2007"], data_dir=copy)


def test_a_checkpoint_that_is_not_metaembed_is_refused(tmp_path):
    from metaembed.evaluation.checkpoint_info import NotMetaEmbedCheckpointError
    from metaembed.evaluation.wrapper import MetaEmbedWrapper

    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32}))
    with pytest.raises(NotMetaEmbedCheckpointError, match=r"not a MetaEmbed checkpoint.*'bert'"):
        MetaEmbedWrapper(str(bert))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NotMetaEmbedCheckpointError, match=r"no config\.json"):
        MetaEmbedWrapper(str(empty))
    with pytest.raises(FileNotFoundError, match="neither an existing directory nor a Hub repo id"):
        MetaEmbedWrapper(str(tmp_path / "missing" / "x" / "y"))


def test_images_zip_is_extracted_once_and_found(mmeb_root, tmp_path):
    """MMEB-eval ships `images.zip`; paths in the parquet are relative to the folder it unzips to."""
    import zipfile

    from metaembed.evaluation.mmeb_data import load_mmeb_subset
    from metaembed.evaluation.mmeb_subsets import SUBSETS_BY_NAME

    copy = tmp_path / "mmeb"
    shutil.copytree(mmeb_root, copy)
    with zipfile.ZipFile(copy / "images.zip", "w") as archive:
        for image in sorted((copy / "images").rglob("*.png")):
            archive.write(image, f"eval_images/{image.relative_to(copy / 'images').as_posix()}")
    shutil.rmtree(copy / "images")
    split = load_mmeb_subset(SUBSETS_BY_NAME["RefCOCO"], data_dir=copy)
    assert (copy / "images" / ".extracted").is_file()
    image = split["queries"][0]["image"]  # decoded lazily, on access
    assert image.size == (56, 56)
