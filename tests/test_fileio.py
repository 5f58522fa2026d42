"""The library's crash-safe writes: JSON reports and figures land whole or not at all."""

from __future__ import annotations

import json

import matplotlib
import pytest

from metaembed.fileio import TMP_MARKER, save_figure, write_json

matplotlib.use("Agg")


def test_write_json_creates_the_folder_and_writes_indented_json(tmp_path):
    path = write_json(tmp_path / "new" / "results.json", {"ndcg@10": 0.5, "budgets": [[1, 1]]})
    text = path.read_text()
    assert text.endswith("}\n") and '\n  "ndcg@10": 0.5' in text
    assert json.loads(text) == {"ndcg@10": 0.5, "budgets": [[1, 1]]}


def test_write_json_that_fails_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = write_json(tmp_path / "results.json", {"old": True})
    with pytest.raises(TypeError):
        write_json(path, {"new": object()})
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_save_figure_writes_the_suffixes_format_and_closes_the_figure(tmp_path):
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots()
    axis.plot([1, 2], [3, 4])
    path = save_figure(figure, tmp_path / "plots" / "curve.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(figure.number)
    assert not any(TMP_MARKER in p.name for p in path.parent.iterdir())
    figure, _ = plt.subplots()
    assert save_figure(figure, tmp_path / "plots" / "curve.svg").read_text().lstrip().startswith("<?xml")
