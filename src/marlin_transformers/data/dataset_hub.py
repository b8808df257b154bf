"""A prepared face-video folder as Parquet shards and a dataset card, and its upload to the Hub (`push-dataset`).

`export_for_hub` writes, into a folder of its own::

    README.md                                the dataset card (YAML: licence, configs, features, split sizes)
    data/train-00000-of-0000N.parquet        rows of `face_video_builder` (clip and map bytes embedded), in row
    data/validation-00000-of-0000M.parquet   groups of `rows_per_group` rows, shards of at most `max_shard_bytes`

which `load_dataset(folder)` and, once uploaded, `load_dataset(repo_id)` (streaming too) read back. Small row groups
let a streaming reader fetch a few clips at a time; the features (ClassLabel names, Array3D shapes) travel in the
Parquet schema's metadata. `push_dataset` then uploads the folder with `huggingface_hub.HfApi` to a dataset repo,
private by default: YouTube Faces may not be redistributed publicly, so it is refused as public.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

from ..constants import CITATION, TEMPLATES
from ..exceptions import DatasetError
from .face_video_builder import YTF_CITATION, YTF_HOMEPAGE, YTF_LICENSE, load_prepared_faces
from .prepared_faces import read_prepared

DEFAULT_MAX_SHARD_BYTES = 500 * 1024**2
DEFAULT_ROWS_PER_GROUP = 16


def write_parquet_shards(
    dataset_dict,
    folder: str | os.PathLike,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    rows_per_group: int = DEFAULT_ROWS_PER_GROUP,
) -> dict[str, list[Path]]:
    """`folder/data/<split>-<i>-of-<n>.parquet` for every split of a `DatasetDict`; returns the files per split."""
    data = Path(folder) / "data"
    data.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, dataset in dataset_dict.items():
        num_shards = max(1, math.ceil(dataset.data.nbytes / max_shard_bytes))
        written[split] = []
        for index in range(num_shards):
            path = data / f"{split}-{index:05d}-of-{num_shards:05d}.parquet"
            partial = path.with_name(f".{path.name}.partial")
            dataset.shard(num_shards, index, contiguous=True).to_parquet(str(partial), batch_size=rows_per_group)
            os.replace(partial, path)
            written[split].append(path)
    return written


def _size_category(count: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if count < limit:
            return name
    return "100K<n<1M"


def dataset_card(info: dict, dataset_dict, pretty_name: str | None = None):
    """The `huggingface_hub.DatasetCard` of an export: licence, configs (the Parquet files), split sizes, features,
    how it was made and the citations."""
    import datasets
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCard, DatasetCardData

    ytf = info.get("name") == "youtube_faces"
    sizes = {split: len(dataset) for split, dataset in dataset_dict.items()}
    licence = (
        {"license": "other", "license_name": "youtube-faces-research-only", "license_link": YTF_HOMEPAGE}
        if ytf
        else {"license": "unknown"}
    )
    data = DatasetCardData(
        pretty_name=pretty_name or ("YouTube Faces for MARLIN" if ytf else "Face videos for MARLIN"),
        size_categories=_size_category(sum(sizes.values())),
        task_categories=["video-classification"],
        tags=["faces", "video", "marlin", "masked-autoencoder"],
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": split, "path": f"data/{split}-*.parquet"} for split in dataset_dict],
            }
        ],
        **licence,
    )
    features = next(iter(dataset_dict.values())).features
    # The features and split sizes as `dataset_info`: a streaming reader learns the splits' lengths from it.
    split_infos = datasets.SplitDict()
    for split, dataset in dataset_dict.items():
        split_infos.add(datasets.SplitInfo(split, num_bytes=dataset.data.nbytes, num_examples=len(dataset)))
    infos = DatasetInfosDict({"default": datasets.DatasetInfo(features=features, splits=split_infos)})
    infos.to_dataset_card_data(data)
    return DatasetCard.from_template(
        data,
        template_path=str(TEMPLATES / "dataset_card.md"),
        ytf=ytf,
        ytf_license=YTF_LICENSE,
        ytf_citation=YTF_CITATION,
        citation=CITATION,
        settings=info.get("settings"),
        sizes=sizes,
        features={name: repr(feature) for name, feature in features.items()},
    )


def export_for_hub(
    prepared: str | os.PathLike,
    folder: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    rows_per_group: int = DEFAULT_ROWS_PER_GROUP,
) -> Path:
    """Write the Parquet shards and README.md of a prepared folder into `folder` (replaced if it exists); returns it.

    The folder is written beside itself under a hidden name and renamed into place, so it is whole or absent."""
    info, _ = read_prepared(prepared)
    dataset_dict = load_prepared_faces(prepared, cache_dir=cache_dir)
    folder = Path(folder)
    staging = folder.with_name(f".{folder.name}.{os.getpid()}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        write_parquet_shards(dataset_dict, staging, max_shard_bytes, rows_per_group)
        dataset_card(info, dataset_dict).save(staging / "README.md")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def push_dataset(
    prepared: str | os.PathLike,
    repo_id: str,
    folder: str | os.PathLike | None = None,
    private: bool = True,
    token: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> str:
    """Export a prepared folder (`export_for_hub`, into `folder`, default `<prepared>/hub`) and upload it to the
    dataset repo `repo_id` (made if missing, private unless `private=False`); returns the repo's URL.

    Raises:
        DatasetError: YouTube Faces with `private=False` (it may not be redistributed publicly).
    """
    from huggingface_hub import HfApi

    info, _ = read_prepared(prepared)
    if info.get("name") == "youtube_faces" and not private:
        raise DatasetError(f"{prepared}: YouTube Faces may not be redistributed publicly; push it as a private repo.")
    folder = export_for_hub(prepared, folder or Path(prepared) / "hub", cache_dir=cache_dir)
    api = HfApi(token=token)
    url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_folder(
        folder_path=str(folder),
        repo_id=url.repo_id,
        repo_type="dataset",
        commit_message="Face videos prepared by marlin-transformers",
    )
    return str(url)
