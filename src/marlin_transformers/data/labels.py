"""Labels tables: the CSV format that fine-tuning, linear probing and the CelebV-HQ preparation share.

A labels CSV is a header, then one row per video. Column `path` is the video, relative to the CSV's folder or
absolute (`input` is accepted as its name too). The other columns are the labels:

- multi-label: one 0/1 column per label, named after it (CelebV-HQ: `path,blurry,male,young,...`);
- single-label: one column `label` holding a class name or a class index;
- regression: one numeric column per target.

Read by `examples/finetune.py` and `examples/linear_probe.py`; written by `data.celebv_hq.prepare_celebvhq`.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..exceptions import DatasetError


def write_labels_csv(
    path: str | os.PathLike, video_paths: Sequence[str | os.PathLike], labels: np.ndarray, label_names: Sequence[str]
) -> None:
    """Write a multi-label labels CSV: `path` (relative to the CSV's folder) and one 0/1 column per label.

    Args:
        video_paths: num_videos paths.
        labels: (num_videos, num_labels) 0/1.
        label_names: num_labels column names.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(labels, dtype=np.int64).reshape(len(video_paths), len(label_names))
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", *label_names])
        for video, row in zip(video_paths, labels):
            writer.writerow([os.path.relpath(Path(video).absolute(), path.parent.absolute()), *row.tolist()])
    os.replace(partial, path)


@dataclass(frozen=True)
class LabelsTable:
    """A labels CSV read into memory.

    Attributes:
        paths: num_videos absolute video paths (relative ones resolved against the CSV's folder).
        labels: single-label (num_videos,) int64 class indices; multi-label (num_videos, num_labels) int64 0/1;
            regression (num_videos, num_targets) float32.
        label_names: class names (single-label) or column names (multi-label, regression).
    """

    paths: list[str]
    labels: np.ndarray
    label_names: list[str]


def read_labels_csv(path: str | os.PathLike, problem_type: str) -> LabelsTable:
    """Read a labels CSV (layout in the module docstring) for `problem_type` (transformers' names)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such labels file") from None
    if not rows or not rows[0]:
        raise DatasetError(f"{path}: empty labels file; expected a header 'path,<label columns>'")
    header, body = [name.strip() for name in rows[0]], [row for row in rows[1:] if row]
    key = "path" if "path" in header else "input" if "input" in header else None
    if key is None:
        raise DatasetError(f"{path}: no 'path' (or 'input') column in the header {header}")
    if not body:
        raise DatasetError(f"{path}: has a header but no rows")
    key_index = header.index(key)
    label_columns = [i for i in range(len(header)) if i != key_index]
    label_names = [header[i] for i in label_columns]
    for line_number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DatasetError(f"{path}:{line_number}: {len(row)} fields, the header has {len(header)}")
    paths = [os.path.normpath(os.path.abspath(path.parent / row[key_index])) for row in body]
    values = [[row[i].strip() for i in label_columns] for row in body]

    if problem_type == "single_label_classification":
        if label_names != ["label"]:
            raise DatasetError(f"{path}: a single-label CSV has columns 'path,label', found {header}")
        column = [v[0] for v in values]
        if all(v.lstrip("-").isdigit() for v in column):
            labels = np.array([int(v) for v in column], dtype=np.int64)
            if labels.min() < 0:
                raise DatasetError(f"{path}: class indices must be >= 0, found {labels.min()}")
            return LabelsTable(paths, labels, [str(i) for i in range(int(labels.max()) + 1)])
        names = sorted(set(column))
        index = {name: i for i, name in enumerate(names)}
        return LabelsTable(paths, np.array([index[v] for v in column], dtype=np.int64), names)

    if problem_type not in ("multi_label_classification", "regression"):
        raise DatasetError(f"unknown problem type {problem_type!r} for {path}")
    if not label_names:
        raise DatasetError(f"{path}: no label columns besides {key!r}")
    try:
        matrix = np.array([[float(v) for v in row] for row in values], dtype=np.float64)
    except ValueError as error:
        raise DatasetError(f"{path}: a label is not a number ({error})") from None
    if problem_type == "regression":
        return LabelsTable(paths, matrix.astype(np.float32), label_names)
    if not np.isin(matrix, (0.0, 1.0)).all():
        raise DatasetError(f"{path}: multi-label columns must hold 0 or 1 only")
    return LabelsTable(paths, matrix.astype(np.int64), label_names)


def labels_dataset(path: str | os.PathLike, problem_type: str):
    """A `datasets.Dataset` from a labels CSV: columns `path` (str) and `labels`.

    `labels` is a class index (`ClassLabel` with the class names) for single-label, a list of float32 0/1 (ready for
    `BCEWithLogitsLoss`) for multi-label, a list of float32 targets for regression.
    """
    import datasets

    table = read_labels_csv(path, problem_type)
    if problem_type == "single_label_classification":
        label_feature = datasets.ClassLabel(names=table.label_names)
    else:
        label_feature = datasets.Sequence(datasets.Value("float32"), length=len(table.label_names))
    features = datasets.Features({"path": datasets.Value("string"), "labels": label_feature})
    return datasets.Dataset.from_dict({"path": table.paths, "labels": table.labels.tolist()}, features=features)
