"""Labels are checked cell by cell before anything trains: `data.labels` refuses what would train silently wrong."""

import json
from pathlib import Path

import numpy as np
import pytest

from marlin_transformers.data.labels import read_labels, read_labels_csv, write_labels_csv
from marlin_transformers.exceptions import DatasetError


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


@pytest.mark.parametrize("cell", ["nan", "NaN", "inf", "-Infinity"])
def test_non_finite_regression_label_names_file_line_and_column(tmp_path, cell):
    labels = write(tmp_path / "train.csv", f"path,valence,arousal\na.mp4,0.5,1\n\nb.mp4,0.1,{cell}\n")
    with pytest.raises(DatasetError) as error:
        read_labels_csv(labels, "regression")
    message = str(error.value)
    assert message.startswith(f"{labels}:4: column 'arousal' holds '{cell}', not a finite number")  # line 4: a blank
    assert "\n" not in message and "remove the row" in message


@pytest.mark.parametrize(
    ("problem_type", "text", "column"),
    [
        ("single_label_classification", "path,label\na.mp4,smile\nb.mp4,\n", "label"),
        ("single_label_classification", "path,label\na.mp4,smile\n , calm\n", "path"),
        ("regression", "path,valence\na.mp4,0.5\nb.mp4,  \n", "valence"),
        ("multi_label_classification", "path,male,young\na.mp4,1,0\nb.mp4,,1\n", "male"),
    ],
)
def test_empty_cell_names_file_line_and_column(tmp_path, problem_type, text, column):
    labels = write(tmp_path / "labels.csv", text)
    with pytest.raises(DatasetError, match=f"^{labels}:3: column '{column}' is empty; fill it in or remove the row$"):
        read_labels(labels, problem_type)


def test_bad_numbers_name_their_line(tmp_path):
    labels = write(tmp_path / "labels.csv", "path,male\na.mp4,1\nb.mp4,0.5\n")
    with pytest.raises(DatasetError, match=f"^{labels}:3: column 'male' holds '0.5'; multi-label columns hold 0 or 1"):
        read_labels_csv(labels, "multi_label_classification")
    labels = write(tmp_path / "labels.csv", "path,valence\na.mp4,high\n")
    with pytest.raises(DatasetError, match=f"^{labels}:2: column 'valence' holds 'high', not a number"):
        read_labels_csv(labels, "regression")


def test_blank_rows_are_skipped_and_good_labels_read(tmp_path):
    labels = write(tmp_path / "labels.csv", "path,valence\na.mp4,0.5\n,\n\nb.mp4,-2e-1\n")
    table = read_labels_csv(labels, "regression")
    assert table.paths == [str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4")]
    np.testing.assert_allclose(table.labels, [[0.5], [-0.2]])


def test_non_utf8_csv_is_one_line_saying_save_as_utf8(tmp_path):
    labels = write(tmp_path / "labels.csv", "path,label\na.mp4,smile\nb.mp4,café\n", encoding="latin-1")
    with pytest.raises(DatasetError) as error:
        read_labels(labels, "single_label_classification")
    assert str(error.value) == f"{labels}:3: not UTF-8 text (byte 0xe9); save the file as UTF-8 (Excel: 'CSV UTF-8')"
    # Excel's "CSV UTF-8" (a byte-order mark first) reads: the first column is still `path`.
    write(labels, "\ufeffpath,label\na.mp4,café\n")
    assert read_labels_csv(labels, "single_label_classification").label_names == ["café"]


def test_json_labels_are_checked_too(tmp_path):
    records = [{"path": "a.mp4", "labels": [0.5]}, {"path": "b.mp4", "labels": [None]}]
    (tmp_path / "data.json").write_text(json.dumps(records))
    with pytest.raises(DatasetError, match="label 'LABEL_0' of .*b.mp4 is nan, not a finite number"):
        read_labels(tmp_path / "data.json", "regression")
    (tmp_path / "data.jsonl").write_text('{"path": "a.mp4", "label": "smile"}\n{"path": "b.mp4", "label": ""}\n')
    with pytest.raises(DatasetError, match="b.mp4 has an empty class label"):
        read_labels(tmp_path / "data.jsonl", "single_label_classification")
    (tmp_path / "data.jsonl").write_bytes('{"path": "é.mp4", "label": "smile"}\n'.encode("latin-1"))
    with pytest.raises(DatasetError, match="data.jsonl: not UTF-8 text; save the file as UTF-8$"):
        read_labels(tmp_path / "data.jsonl", "single_label_classification")


@pytest.mark.parametrize(
    "problem_type, labels, names, expected, read_names",
    [  # single-label: indices are written as names, read back as indices into the sorted names
        ("single_label_classification", [1, 0, 1], ["real", "fake"], [0, 1, 0], ["fake", "real"]),
        ("single_label_classification", ["fake", "real", "fake"], ["real", "fake"], [0, 1, 0], ["fake", "real"]),
        ("multi_label_classification", [[0, 1], [1, 1], [0, 0]], ["happy", "sad"], [[0, 1], [1, 1], [0, 0]], None),
        ("regression", [[-3.0], [0.4], [2.6666666666666665]], ["sentiment"], [[-3.0], [0.4], [2.6666667]], None),
    ],
)
def test_written_labels_read_back_as_written(tmp_path, problem_type, labels, names, expected, read_names):
    videos = [tmp_path / "clips" / f"{i}.mp4" for i in range(3)]
    write_labels_csv(tmp_path / "task" / "train.csv", videos, labels, names, problem_type)
    table = read_labels_csv(tmp_path / "task" / "train.csv", problem_type)
    assert table.paths == [str(v) for v in videos]
    assert table.label_names == (read_names or names)
    np.testing.assert_array_equal(table.labels, np.asarray(expected, dtype=table.labels.dtype))
    assert not list((tmp_path / "task").glob(".*partial"))
