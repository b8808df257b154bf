"""Data sets and label tables: the labels CSV, CelebV-HQ, YouTube Faces in the reference's layout."""

from .labels import LabelsTable, labels_dataset, read_labels_csv, write_labels_csv
from .youtube_faces import precomputed_label_maps, youtube_faces_clips

__all__ = [
    "LabelsTable",
    "labels_dataset",
    "precomputed_label_maps",
    "read_labels_csv",
    "write_labels_csv",
    "youtube_faces_clips",
]
