"""Labels tables: the CSV format that fine-tuning, linear probing and the CelebV-HQ preparation share.

A labels CSV is a header, then one row per video. Column `path` is the video, relative to the CSV's folder or
absolute (`input` is accepted as its name too). The other columns are the labels:

- multi-label: one 0/1 column per label, named after it (CelebV-HQ: `path,blurry,male,young,...`);
- single-label: one column `label` holding a class name or a class index;
- regression: one numeric column per target.

Also here: `labels_table`, the checks every labels source shares (`read_labels` reads JSON,
class folders and saved datasets through it), and the two alignments a held-out split needs: its labels re-indexed
to the training label names (`align_label_names`), and its rows matched to other inputs, such as extracted
features, by path or file stem (`match_videos`).

Read by `evaluation.clip_dataset` and `evaluation.linear_probe`; written by `data.celebv_hq.prepare_celebvhq`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..constants import PROBLEM_TYPES
from ..exceptions import DatasetError
from ..records import write_text_atomic
from ..video.decoding import VIDEO_EXTENSIONS, videos_in_folder

SAVED_DATASET_FILES = ("dataset_dict.json", "dataset_info.json", "state.json")
DEFAULT_EVAL_SPLITS = ("validation", "val", "test")


def write_labels_csv(
    path: str | os.PathLike,
    video_paths: Sequence[str | os.PathLike],
    labels: np.ndarray | Sequence,
    label_names: Sequence[str],
    problem_type: str = "multi_label_classification",
) -> None:
    """Write a labels CSV (layout in the module docstring) atomically: `path` (relative to the CSV's folder), then
    the labels as `problem_type` reads them back.

    Args:
        video_paths: num_videos paths.
        labels: multi-label (num_videos, num_labels) 0/1; single-label num_videos class names or indices into
            `label_names`, written as names; regression (num_videos, num_targets) numbers.
        label_names: multi-label and regression: the column names; single-label: the class names.
    """
    path = Path(path)
    if problem_type == "single_label_classification":
        header = ["label"]
        rows = [[label_names[label] if isinstance(label, int | np.integer) else str(label)] for label in labels]
    elif problem_type == "multi_label_classification":
        header = list(label_names)
        rows = np.asarray(labels, dtype=np.int64).reshape(len(video_paths), len(label_names)).tolist()
    elif problem_type == "regression":
        header = list(label_names)
        rows = [
            [repr(float(v)) for v in row] for row in np.asarray(labels, dtype=np.float64).reshape(len(video_paths), -1)
        ]
    else:
        raise DatasetError(f"unknown problem type {problem_type!r} for {path}; use one of {', '.join(PROBLEM_TYPES)}")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", *header])
    for video, row in zip(video_paths, rows, strict=True):
        writer.writerow([os.path.relpath(Path(video).absolute(), path.parent.absolute()), *row])
    write_text_atomic(path, buffer.getvalue())


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
    """Read a labels CSV (layout in the module docstring) for `problem_type` (transformers' names).

    Every cell is checked before anything trains: an empty cell, a label that is not a number (multi-label,
    regression), NaN or infinity (regression), or anything but 0/1 (multi-label) is a `DatasetError` naming the file,
    the line and the column. Rows whose cells are all blank are skipped, as blank lines are.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such labels file") from None
    except IsADirectoryError:
        raise DatasetError(f"{path}: is a folder, not a labels CSV") from None
    try:
        text = raw.decode("utf-8-sig")  # -sig: Excel's "CSV UTF-8" starts the file with a byte-order mark
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DatasetError(
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[error.start]:02x}); save the file as UTF-8 "
            "(Excel: 'CSV UTF-8')"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    rows = [(reader.line_num, row) for row in reader]  # line_num: the (last) line the row ends on, for errors
    if not rows or not rows[0][1]:
        raise DatasetError(f"{path}: empty labels file; expected a header 'path,<label columns>'")
    header = [name.strip() for name in rows[0][1]]
    body = [(line, row) for line, row in rows[1:] if any(cell.strip() for cell in row)]
    key = "path" if "path" in header else "input" if "input" in header else None
    if key is None:
        raise DatasetError(f"{path}: no 'path' (or 'input') column in the header {header}")
    if not body:
        raise DatasetError(f"{path}: has a header but no rows")
    key_index = header.index(key)
    label_columns = [i for i in range(len(header)) if i != key_index]
    label_names = [header[i] for i in label_columns]
    for line, row in body:
        if len(row) != len(header):
            raise DatasetError(f"{path}:{line}: {len(row)} fields, the header has {len(header)}")
        for name, cell in zip(header, row):
            if not cell.strip():
                raise DatasetError(f"{path}:{line}: column {name!r} is empty; fill it in or remove the row")
    paths = [os.path.normpath(os.path.abspath(path.parent / row[key_index])) for _, row in body]
    values = [[row[i].strip() for i in label_columns] for _, row in body]

    if problem_type == "single_label_classification":
        if label_names != ["label"]:
            raise DatasetError(f"{path}: a single-label CSV has columns 'path,label', found {header}")
        column = [v[0] for v in values]
        if all(v.lstrip("-").isdigit() for v in column):
            return labels_table(paths, [int(v) for v in column], problem_type, source=str(path))
        return labels_table(paths, column, problem_type, source=str(path))

    if problem_type not in ("multi_label_classification", "regression"):
        raise DatasetError(f"unknown problem type {problem_type!r} for {path}")
    if not label_names:
        raise DatasetError(f"{path}: no label columns besides {key!r}")
    numbers = [
        [_label_number(cell, name, problem_type, f"{path}:{line}") for cell, name in zip(row, label_names)]
        for (line, _), row in zip(body, values)
    ]
    return labels_table(paths, numbers, problem_type, label_names, str(path))


def _label_number(cell: str, column: str, problem_type: str, where: str) -> float:
    """One multi-label (0 or 1) or regression (finite) cell as a number; `where` is "file:line", named in errors."""
    try:
        value = float(cell)
    except ValueError:
        raise DatasetError(
            f"{where}: column {column!r} holds {cell!r}, not a number; fix it or remove the row"
        ) from None
    if problem_type == "multi_label_classification" and value not in (0.0, 1.0):
        raise DatasetError(f"{where}: column {column!r} holds {cell!r}; multi-label columns hold 0 or 1 only")
    if not math.isfinite(value):
        raise DatasetError(
            f"{where}: column {column!r} holds {cell!r}, not a finite number; give a real value or remove the row"
        )
    return value


def labels_table(
    paths: Sequence[str],
    values: Sequence,
    problem_type: str,
    label_names: Sequence[str] | None = None,
    source: str = "labels",
) -> LabelsTable:
    """Per-video label values -> `LabelsTable`, checked the same way whichever file they came from.

    Args:
        paths: num_videos video paths, kept as given.
        values: one per video. Single-label: class indices (int >= 0; the names default to "0", "1", ...) or class
            names (any other value, taken as a string; the classes are the sorted names). Multi-label and
            regression: a sequence of numbers, or a {label name: number} dict (the first dict's keys name the labels).
        problem_type: "single_label_classification", "multi_label_classification" or "regression".
        label_names: class names for class indices, or the names of the labels/targets (default "LABEL_0", ...).
        source: the file or folder the values come from, named in errors.

    Returns:
        `LabelsTable` with labels (num_videos,) int64, (num_videos, num_labels) int64 0/1 or (num_videos,
        num_targets) float32.

    Raises:
        DatasetError: an empty or missing class name, a number that is NaN, infinite or missing, a multi-label value
            other than 0/1, or rows of different lengths; the message names `source` and the video.
    """
    paths = list(paths)
    if problem_type == "single_label_classification":
        if all(isinstance(v, int | np.integer) for v in values):
            labels = np.array(values, dtype=np.int64)
            if labels.min() < 0:
                raise DatasetError(f"{source}: class indices must be >= 0, found {labels.min()}")
            names = list(label_names) if label_names else [str(i) for i in range(int(labels.max()) + 1)]
            return LabelsTable(paths, labels, names)
        blank = next((i for i, v in enumerate(values) if v is None or not str(v).strip()), None)
        if blank is not None:  # it would become a class of its own
            raise DatasetError(f"{source}: {paths[blank]} has an empty class label; give every video a class")
        names = sorted({str(v) for v in values})
        index = {name: i for i, name in enumerate(names)}
        return LabelsTable(paths, np.array([index[str(v)] for v in values], dtype=np.int64), names)
    if problem_type not in ("multi_label_classification", "regression"):
        raise DatasetError(f"unknown problem type {problem_type!r} for {source}")
    if all(isinstance(v, dict) for v in values):
        label_names = list(values[0])
        values = [[v[name] for name in label_names] for v in values]
    try:
        matrix = np.array([np.atleast_1d(v) for v in values], dtype=np.float64)  # (num_videos, num_labels)
    except (ValueError, TypeError):
        raise DatasetError(f"{source}: every video needs the same number of numeric labels") from None
    names = list(label_names) if label_names else [f"LABEL_{i}" for i in range(matrix.shape[1])]
    if len(names) != matrix.shape[1]:
        raise DatasetError(f"{source}: {len(names)} label names for {matrix.shape[1]} labels per video")
    if not np.isfinite(matrix).all():  # NaN (also a missing value, None) or infinity: a model of NaNs
        row, column = np.argwhere(~np.isfinite(matrix))[0]
        raise DatasetError(
            f"{source}: label {names[column]!r} of {paths[row]} is {matrix[row, column]}, not a finite number; "
            "give a real value or leave the video out"
        )
    if problem_type == "regression":
        return LabelsTable(paths, matrix.astype(np.float32), names)
    if not np.isin(matrix, (0.0, 1.0)).all():
        raise DatasetError(f"{source}: multi-label columns must hold 0 or 1 only")
    return LabelsTable(paths, matrix.astype(np.int64), names)


def align_label_names(train: LabelsTable, evaluated: LabelsTable, problem_type: str, source: str) -> np.ndarray:
    """The labels of a held-out table in the training table's terms.

    Single-label: `evaluated`'s class indices re-indexed to `train.label_names` (a class the training data lacks is an
    error). Multi-label and regression: `evaluated.labels` as they are, once the label names are checked to match.

    Returns:
        labels shaped like `evaluated.labels`: (num_videos,) int64, or (num_videos, num_labels).
    """
    if problem_type != "single_label_classification":
        if list(evaluated.label_names) != list(train.label_names):
            raise DatasetError(f"{source}: label names differ from the training data's")
        return evaluated.labels
    index = {name: i for i, name in enumerate(train.label_names)}
    unknown = sorted({evaluated.label_names[i] for i in np.unique(evaluated.labels)} - set(index))
    if unknown:
        raise DatasetError(f"{source}: class {unknown[0]!r} never occurs in the training data")
    return np.array([index[evaluated.label_names[i]] for i in evaluated.labels], dtype=np.int64)


def video_key(path: str | os.PathLike) -> str:
    """A video's file name without its video extension (`VIDEO_EXTENSIONS`): the fallback key of `match_videos`."""
    name = os.path.basename(os.fspath(path))
    stem, extension = os.path.splitext(name)
    return stem if extension.lower() in VIDEO_EXTENSIONS else name


def match_videos(
    inputs: Sequence[str], video_paths: Sequence[str], skip_missing: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The row of `inputs` (e.g. a `marlin extract` manifest's) for each labelled video.

    A labelled path matches the input with the same absolute path, else the one input with the same `video_key`
    (so a labels file may list bare stems); a match by name only is said in one warning a call.

    Args:
        inputs: num_inputs paths, absolute or relative to the working directory.
        video_paths: num_videos labelled paths (`LabelsTable.paths`).
        skip_missing: leave out labelled videos no input matches, instead of raising.

    Returns:
        (input_rows, label_rows): two int64 arrays of one length, pairs of matching rows.
    """
    by_path = {os.path.normpath(os.path.abspath(name)): i for i, name in enumerate(inputs)}
    by_key: dict[str, list[int]] = {}
    for i, name in enumerate(inputs):
        by_key.setdefault(video_key(name), []).append(i)
    input_rows, label_rows, missing, by_name = [], [], [], []
    for row, path in enumerate(video_paths):
        index = by_path.get(os.path.normpath(path))
        if index is None:
            candidates = by_key.get(video_key(path), [])
            if len(candidates) > 1:
                raise DatasetError(f"{path}: {len(candidates)} inputs share its name; list full paths")
            index = candidates[0] if candidates else None
            if index is not None:
                by_name.append((path, inputs[index]))
        if index is None:
            missing.append(path)
            continue
        input_rows.append(index)
        label_rows.append(row)
    if missing and not skip_missing:
        raise DatasetError(
            f"{missing[0]}: no features for it ({len(missing)} labelled "
            f"{'video lacks' if len(missing) == 1 else 'videos lack'} them); "
            "extract them, or leave them out with skip_missing",
            parameter="skip_missing",
        )
    if not input_rows:
        raise DatasetError("none of the labelled videos has extracted features")
    if by_name:
        path, name = by_name[0]
        warnings.warn(
            f"{len(by_name)} of {len(video_paths)} labelled videos matched by file name only, not by path "
            f"(e.g. {path} -> {name})",
            stacklevel=2,
        )
    return np.array(input_rows, dtype=np.int64), np.array(label_rows, dtype=np.int64)


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


def read_labels(source: str | os.PathLike, problem_type: str, split: str | None = None) -> LabelsTable:
    """Videos and labels from a labels CSV, a folder of class subfolders, a JSON/JSON Lines file or a saved dataset.

    Args:
        source: see the module docstring for the layouts.
        problem_type: one of `metrics.PROBLEM_TYPES`.
        split: the split of a saved `DatasetDict` (default: the only one, or validation/val/test).

    Returns:
        `LabelsTable`: absolute paths; labels (num_videos,) int64 class indices, (num_videos, num_labels) 0/1 int64,
        or (num_videos, num_targets) float32; the class, label or target names.
    """
    if problem_type not in PROBLEM_TYPES:
        raise DatasetError(f"unknown problem type {problem_type!r}; use one of {', '.join(PROBLEM_TYPES)}")
    path = Path(source)
    if not path.exists():
        raise DatasetError(f"{source}: no such labels file or folder")
    if path.is_dir():
        if any((path / name).is_file() for name in SAVED_DATASET_FILES):
            return _read_saved_dataset(path, problem_type, split)
        return _read_class_folders(path, problem_type)
    if path.suffix.lower() in (".json", ".jsonl"):
        return _read_json(path, problem_type)
    return read_labels_csv(path, problem_type)


def _read_class_folders(folder: Path, problem_type: str) -> LabelsTable:
    if problem_type != "single_label_classification":
        raise DatasetError(f"{folder}: a folder of class subfolders is single-label; pass a labels CSV instead")
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths, labels = [], []
    for index, name in enumerate(names):
        videos = videos_in_folder(folder / name)
        paths.extend(str(p.absolute()) for p in videos)
        labels.extend([index] * len(videos))
    if not paths:
        raise DatasetError(f"{folder}: no videos in class subfolders (expected {folder}/<class>/<video>.mp4)")
    return LabelsTable(paths, np.array(labels, dtype=np.int64), names)


def _read_json(path: Path, problem_type: str) -> LabelsTable:
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".jsonl":
            raw = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            raw = json.loads(text)
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not UTF-8 text; save the file as UTF-8") from None
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path}: not valid JSON ({error})") from None
    label_names = None
    if isinstance(raw, dict):
        label_names, raw = raw.get("label_names"), raw.get("videos")
    if not isinstance(raw, list) or not raw or not all(isinstance(r, dict) and "path" in r for r in raw):
        raise DatasetError(f"{path}: expected a list of records with a 'path' (or {{'videos': [records]}})")
    paths = [os.path.normpath(path.parent.absolute() / r["path"]) for r in raw]
    key = "label" if problem_type == "single_label_classification" else "labels"
    if not all(key in r for r in raw):
        raise DatasetError(f"{path}: every record needs a {key!r} for {problem_type}")
    return labels_table(paths, [r[key] for r in raw], problem_type, label_names, str(path))


def _read_saved_dataset(folder: Path, problem_type: str, split: str | None) -> LabelsTable:
    import datasets

    loaded = datasets.load_from_disk(str(folder))
    if isinstance(loaded, datasets.DatasetDict):
        if split is None:
            names = list(loaded) if len(loaded) == 1 else [s for s in DEFAULT_EVAL_SPLITS if s in loaded][:1]
            if not names:
                raise DatasetError(
                    f"{folder}: a DatasetDict with splits {list(loaded)}; pick one with split", parameter="split"
                )
            split = names[0]
        if split not in loaded:
            raise DatasetError(f"{folder}: no split {split!r} (has {', '.join(loaded)})")
        loaded = loaded[split]
    path_column = next((c for c in ("path", "video", "input") if c in loaded.column_names), None)
    label_column = next((c for c in ("labels", "label") if c in loaded.column_names), None)
    if path_column is None or label_column is None:
        raise DatasetError(f"{folder}: needs a 'path' and a 'labels' column, has {loaded.column_names}")
    paths = [os.path.normpath(folder.absolute() / p) for p in loaded[path_column]]
    names = getattr(loaded.features[label_column], "names", None)
    return labels_table(paths, loaded[label_column], problem_type, names, str(folder))
