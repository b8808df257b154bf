"""`marlin prepare-ytf` / `prepare-faces`, the dataset builders and the Hub export, on a small fake YouTube Faces tree.

The tree is made here: the astronaut's face (video_factory.moving_face_frames) moving right over 10 frames, saved as
JPEGs named as YouTube Faces names them (`<video>.<number>.jpg`), numbered across 99 -> 100 so that the string order
differs from the numeric one. MTCNN really runs on it.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from marlin_transformers.cli import main
from marlin_transformers.data.face_video_builder import decode_clip, decode_parsing_maps, load_youtube_faces
from marlin_transformers.data.face_videos import FaceVideo, person_disjoint_split
from marlin_transformers.data.prepared_faces import read_annotations, read_prepared_records
from marlin_transformers.data.youtube_faces import read_split_files
from marlin_transformers.video.cropping import crop_regions, reference_crop_boxes
from marlin_transformers.video.decoding import frame_files
from video_factory import encode_video, moving_face_frames

PERSONS = ("AJ_Cook", "Aaron_Eckhart", "Bob_Hope")
NUM_FRAMES = 10
FIRST_NUMBER = 95  # frames 0.95.jpg ... 0.104.jpg
SHARED_SPLITS = Path(__file__).resolve().parents[2] / "shared" / "ytf_splits"


def make_ytf_tree(root: Path) -> Path:
    from PIL import Image

    frames, _ = moving_face_frames(NUM_FRAMES, 240, 320)
    for person in PERSONS:
        for video in range(2):
            folder = root / "frame_images_DB" / person / str(video)
            folder.mkdir(parents=True)
            for k, frame in enumerate(frames):
                Image.fromarray(frame).save(folder / f"{video}.{FIRST_NUMBER + k}.jpg", quality=92)
    (root / "frame_images_DB" / "AJ_Cook.labeled_faces.txt").write_text("ignored\n")
    return root


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """(YTF root, prepared folder) after one `marlin prepare-ytf` with the seeded split."""
    base = tmp_path_factory.mktemp("ytf")
    root = make_ytf_tree(base / "YouTubeFaces")
    out = base / "prepared"
    assert main(["prepare-ytf", str(root), str(out), "--quiet"]) == 0
    return root, out


def test_frame_files_numeric_order_and_the_reference_string_order(tmp_path):
    for name in ("0.555.jpg", "0.1000.jpg", "0.99.jpg", "0.100.jpg"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in frame_files(tmp_path, "numeric")] == ["0.99.jpg", "0.100.jpg", "0.555.jpg", "0.1000.jpg"]
    assert [p.name for p in frame_files(tmp_path, "reference")] == ["0.100.jpg", "0.1000.jpg", "0.555.jpg", "0.99.jpg"]


def test_prepared_video_is_in_numeric_frame_order_with_crops_landmarks_and_maps(prepared):
    _, out = prepared
    arrays = read_annotations(out / "annotations" / "AJ_Cook" / "0.npz")
    assert arrays["frame_names"].tolist() == [f"0.{FIRST_NUMBER + k}.jpg" for k in range(NUM_FRAMES)]
    assert arrays["frame_indices"].tolist() == list(range(NUM_FRAMES))
    # The face moves right frame after frame: in numeric order the crops follow it monotonically.
    assert (
        np.all(np.diff(arrays["crop_boxes"][:, 0]) >= 0) and arrays["crop_boxes"][-1, 0] > arrays["crop_boxes"][0, 0]
    )
    assert arrays["landmarks"].shape == (NUM_FRAMES, 5, 2) and arrays["detected"].all()
    assert arrays["parsing"].shape == (NUM_FRAMES, 224, 224) and arrays["parsing"].dtype == np.uint8
    assert {4, 5, 6} <= set(np.unique(arrays["parsing"]).tolist())  # eyes and nose drawn
    assert float(arrays["fps"]) == 25.0
    from marlin_transformers.video.decoding import read_video

    frames, _ = read_video(out / "clips" / "AJ_Cook" / "0.mp4")
    assert frames.shape == (NUM_FRAMES, 224, 224, 3)
    assert frames[:, 100:124, 100:124].mean() > 40  # a face in the middle, not a black pad


def test_reference_crop_geometry():
    boxes = np.array([[10.0, 20.0, 51.0, 40.0], [-30.0, -30.0, 10.0, 10.0]])
    # side 2 * int(41 / 2) = 40 around (int(10 + 20.5), int(20 + 10)) = (30, 30)
    assert reference_crop_boxes(boxes).tolist() == [[10, 10, 50, 50], [-30, -30, 10, 10]]
    frame = np.full((1, 20, 20, 3), 200, np.uint8)
    crops, landmarks = crop_regions(frame, np.array([[-10, -10, 10, 10]]), np.array([[[0.0, 0.0]]]), crop_size=8)
    assert crops[0, :3, :3].max() == 0 and crops[0, 5:, 5:].min() == 200  # zero-padded outside the frame
    assert landmarks[0, 0].tolist() == [4.0, 4.0]


@pytest.mark.skipif(not SHARED_SPLITS.is_dir(), reason="the paper's split files are in ../shared/ytf_splits")
def test_paper_split_files_are_read_and_person_disjoint():
    split = read_split_files(SHARED_SPLITS / "train_set.csv", SHARED_SPLITS / "val_set.csv")
    assert (len(split["train"]), len(split["validation"])) == (2593, 633)
    persons = {name: {video.split("/")[0] for video in ids} for name, ids in split.items()}
    assert not persons["train"] & persons["validation"]
    assert "AJ_Cook/0" in split["train"]


def test_seeded_split_is_person_disjoint_deterministic_and_about_the_papers_proportions():
    rng = np.random.default_rng(1)
    videos = [
        FaceVideo(f"p{person}/{v}", f"p{person}", Path("x"))
        for person in range(300)
        for v in range(rng.integers(1, 4))
    ]
    split = person_disjoint_split(videos, seed=0)
    assert split == person_disjoint_split(list(reversed(videos)), seed=0)  # not the listing order
    assert split != person_disjoint_split(videos, seed=1)
    persons = {name: {i.split("/")[0] for i in ids} for name, ids in split.items()}
    assert not persons["train"] & persons["validation"] and len(persons["validation"]) == 60
    fraction = len(split["validation"]) / len(videos)
    assert 0.14 < fraction < 0.26  # the paper: 633 / 3226 = 0.196


def test_seeded_split_of_the_prepared_tree(prepared):
    _, out = prepared
    split = json.loads((out / "split.json").read_text())
    assert split["method"] == "person-disjoint" and split["seed"] == 0
    assert len(split["train"]) == 4 and len(split["validation"]) == 2 and split["left_out"] == []
    assert (out / "train_set.csv").read_text().splitlines()[:2] == ["path,len", f"{split['train'][0]},{NUM_FRAMES}"]


def test_rerun_skips_done_videos_and_takes_split_files(prepared, tmp_path, capsys):
    root, out = prepared
    copy = tmp_path / "prepared"
    shutil.copytree(out, copy)
    (tmp_path / "train.csv").write_text("path,len\nAJ_Cook/0,10\nAJ_Cook/1,10\nBob_Hope/0,10\n")
    (tmp_path / "val.csv").write_text("path,len\nAaron_Eckhart/0,10\n")
    files = ["--split-files", str(tmp_path / "train.csv"), str(tmp_path / "val.csv")]
    assert main(["prepare-ytf", str(root), str(copy), "--quiet", *files]) == 0
    assert "0 done, 6 already done, 0 failed" in capsys.readouterr().err
    split = json.loads((copy / "split.json").read_text())
    assert split["train"] == ["AJ_Cook/0", "AJ_Cook/1", "Bob_Hope/0"] and split["validation"] == ["Aaron_Eckhart/0"]
    assert split["left_out"] == ["Aaron_Eckhart/1", "Bob_Hope/1"]
    assert (copy / "val_set.csv").read_text() == "path,len\nAaron_Eckhart/0,10\n"


def test_resume_after_an_interrupted_run_redoes_only_what_was_not_recorded(prepared, tmp_path, capsys):
    root, out = prepared
    copy = tmp_path / "prepared"
    shutil.copytree(out, copy)
    manifest = copy / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    killed = json.loads(lines[-1])["video_id"]
    # Killed while writing the last video's record (half a line), with its clip half-written beside it.
    manifest.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])
    partial = copy / "clips" / Path(killed).parent / f".{Path(killed).name}.partial.mp4"
    partial.write_bytes(b"\0" * 100)
    before = (copy / "annotations" / "AJ_Cook" / "0.npz").stat().st_mtime_ns
    assert main(["prepare-ytf", str(root), str(copy), "--quiet"]) == 0
    assert "1 done, 5 already done, 0 failed" in capsys.readouterr().err
    assert not partial.exists()
    records = read_prepared_records(copy)
    assert len(records) == 6 and all(r["status"] == "ok" for r in records.values())
    assert (copy / "annotations" / "AJ_Cook" / "0.npz").stat().st_mtime_ns == before  # done videos untouched
    # The same folder with other settings is refused in one line.
    assert main(["prepare-ytf", str(root), str(copy), "--quiet", "--crop-style", "reference"]) == 1
    err = capsys.readouterr().err
    assert "holds videos prepared with other settings (crop_style)" in err and err.count("\n") == 1


def test_a_corrupt_video_gets_one_line_and_the_run_goes_on(tmp_path, capsys):
    videos = tmp_path / "videos"
    (videos / "alice").mkdir(parents=True)
    encode_video(videos / "alice" / "talk.mp4", moving_face_frames(8, 240, 320)[0], fps=30)
    (videos / "bob.mp4").write_bytes(b"not a video at all")
    out = tmp_path / "prepared"
    assert main(["prepare-faces", str(videos), str(out), "--quiet", "--lossless"]) == 1
    err = capsys.readouterr().err
    assert err.count("bob.mp4") == 1 and "1 done, 0 already done, 1 failed" in err
    records = read_prepared_records(out)
    assert records["alice/talk"]["status"] == "ok" and records["alice/talk"]["person"] == "alice"
    assert records["alice/talk"]["fps"] == 30.0 and records["bob"]["status"] == "error"


def test_builder_gives_typed_train_and_validation(prepared, tmp_path):
    import datasets

    _, out = prepared
    dataset = load_youtube_faces(out, cache_dir=tmp_path / "cache")
    assert {name: len(split) for name, split in dataset.items()} == {"train": 4, "validation": 2}
    features = dataset["train"].features
    assert isinstance(features["person"], datasets.ClassLabel) and features["person"].names == list(PERSONS)
    assert features["landmarks"] == datasets.Array3D(shape=(None, 5, 2), dtype="float32")
    assert features["clip"] == datasets.Value("binary") and features["parsing_maps"] == datasets.Value("binary")
    row = dataset["validation"][0]
    assert row["num_frames"] == NUM_FRAMES and row["fps"] == 25.0 and len(row["frame_indices"]) == NUM_FRAMES
    assert np.asarray(row["landmarks"]).shape == (NUM_FRAMES, 5, 2)
    assert decode_clip(row["clip"]).shape == (NUM_FRAMES, 224, 224, 3)
    assert decode_clip(row["clip"], [9, 0, 0]).shape == (3, 224, 224, 3)
    assert decode_parsing_maps(row["parsing_maps"]).shape == (NUM_FRAMES, 224, 224)
    train_persons = {features["person"].int2str(p) for p in dataset["train"]["person"]}
    validation_persons = {features["person"].int2str(p) for p in dataset["validation"]["person"]}
    assert not train_persons & validation_persons


def test_parquet_round_trip_and_dataset_card(prepared, tmp_path):
    import datasets
    from huggingface_hub import DatasetCard, DatasetCardData

    from marlin_transformers.data.dataset_hub import export_for_hub

    _, out = prepared
    folder = export_for_hub(out, tmp_path / "hub", cache_dir=tmp_path / "cache")
    shards = sorted(p.name for p in (folder / "data").iterdir())
    assert shards == ["train-00000-of-00001.parquet", "validation-00000-of-00001.parquet"]
    original = load_youtube_faces(out, cache_dir=tmp_path / "cache")
    by_files = datasets.load_dataset(
        "parquet",
        data_files={"train": str(folder / "data" / "train-*.parquet")},
        cache_dir=str(tmp_path / "cache2"),
    )
    by_folder = datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "cache3"))
    assert set(by_folder) == {"train", "validation"}
    for loaded in (by_files["train"], by_folder["train"]):
        assert loaded.features == original["train"].features
        for read, written in zip(loaded, original["train"]):
            assert read["clip"] == written["clip"] and read["parsing_maps"] == written["parsing_maps"]
            assert read["landmarks"] == written["landmarks"] and read["person"] == written["person"]

    card = DatasetCard.load(folder / "README.md")
    assert isinstance(card.data, DatasetCardData)
    assert card.data.license == "other" and card.data.license_name == "youtube-faces-research-only"
    assert card.data.configs[0]["data_files"][0] == {"split": "train", "path": "data/train-*.parquet"}
    assert "may not be redistributed publicly" in card.text and "wolf2011face" in card.text
    assert "| train | 4 |" in card.text and "cai2023marlin" in card.text


def test_push_dataset_creates_a_private_dataset_repo_and_uploads(prepared, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    _, out = prepared
    calls = []

    class FakeApi:  # offline: everything up to the upload call is real
        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, repo_id, repo_type=None, private=None, exist_ok=False):
            calls.append(("create_repo", repo_id, repo_type, private, exist_ok))
            return huggingface_hub.RepoUrl(f"https://huggingface.co/datasets/{repo_id}")

        def upload_folder(self, folder_path, repo_id, repo_type, commit_message):
            files = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file())
            calls.append(("upload_folder", files, repo_id, repo_type))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "hub"
    assert main(["push-dataset", str(out), "me/ytf", "--folder", str(folder)]) == 0
    assert "pushed to https://huggingface.co/datasets/me/ytf (private)" in capsys.readouterr().out
    assert calls[1] == ("create_repo", "me/ytf", "dataset", True, True)
    assert calls[2][0] == "upload_folder" and calls[2][2:] == ("me/ytf", "dataset")
    assert "README.md" in calls[2][1] and "data/train-00000-of-00001.parquet" in calls[2][1]
    calls.clear()
    assert main(["push-dataset", str(out), "me/ytf", "--public", "--folder", str(folder)]) == 1
    assert "may not be redistributed publicly" in capsys.readouterr().err and calls == []


def test_collator_samples_the_papers_clips_with_fasking_masks_from_stored_maps(prepared, tmp_path):
    from marlin_transformers import MarlinConfig
    from marlin_transformers.pretraining.clip_sampling import clip_frame_indices
    from marlin_transformers.pretraining.dataset_clips import (
        PreparedClipCollator,
        PreparedClipDataset,
        load_prepared_rows,
    )
    from marlin_transformers.pretraining.masking import seeded_generator

    _, out = prepared
    config = MarlinConfig(num_frames=4, image_size=32, patch_size=16, tubelet_size=2, mask_ratio=0.75)
    rows = load_prepared_rows(str(out), "train", cache_dir=str(tmp_path / "cache"))
    batch = PreparedClipCollator(config, seed=0)([rows[0], rows[1], rows[2]])
    assert batch["pixel_values_videos"].shape == (3, 4, 3, 32, 32) and batch["pixel_values_videos"].max() <= 1
    assert batch["bool_masked_pos"].shape == (3, 2 * 2 * 2) and (batch["bool_masked_pos"].sum(1) == 6).all()
    # 16 frames every 2nd from a random start; a 10-frame video repeats its last frame.
    indices = clip_frame_indices(100, 16, 2, seeded_generator(0))
    assert len(indices) == 16 and set(np.diff(indices)) == {2}
    assert clip_frame_indices(10, 16, 2, seeded_generator(0))[-1] == 9
    dataset = PreparedClipDataset(rows, config, seed=3, clips_per_video=2)
    assert len(dataset) == 8
    first, again = dataset[5], dataset[5]
    assert torch_equal(first["pixel_values_videos"], again["pixel_values_videos"])
    assert torch_equal(first["bool_masked_pos"], again["bool_masked_pos"])
    full = PreparedClipCollator(MarlinConfig(), seed=0)([rows[0]])
    assert full["pixel_values_videos"].shape == (1, 16, 3, 224, 224) and full["bool_masked_pos"].sum() == 1412


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def test_pretrain_takes_a_prepared_dataset(prepared, tmp_path):
    from marlin_transformers.pretraining.arguments import PretrainingArguments

    _, out = prepared
    args = PretrainingArguments(output_dir=str(tmp_path / "run"), dataset=str(out))
    assert args.dataset == str(out) and not args.train_data


def test_pretrain_streams_parquet_shards_through_the_collator(prepared, tmp_path, monkeypatch, capsys):
    """examples/pretrain.py --dataset FOLDER --streaming: 2 steps from Parquet shards, offline."""
    import importlib.util

    import datasets
    import torch

    from conftest import TINY_CLIP
    from marlin_transformers.data.dataset_hub import export_for_hub, write_parquet_shards

    _, out = prepared
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = export_for_hub(out, tmp_path / "hub", cache_dir=tmp_path / "cache")  # its card states the split sizes
    script = Path(__file__).parents[1] / "examples" / "pretrain.py"
    spec = importlib.util.spec_from_file_location("pretrain_example", script)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    batches, real_step = [], example.train_step

    def recording_step(batch, *args):
        batches.append({key: (tuple(value.shape), value.dtype) for key, value in batch.items()})
        return real_step(batch, *args)

    monkeypatch.setattr(example, "train_step", recording_step)
    flags = [f"--config-override={k}={v}" for k, v in TINY_CLIP.items()]
    flags += ["--config-override=mask_strategy=fasking", "--config-override=mask_ratio=0.75", "--batch-size=2"]
    flags += ["--num-workers=0", "--num-epochs=1", "--warmup-epochs=0", "--eval-batch-size=2", "--image-steps=0"]
    flags += ["--checkpointing-steps=0", "--no-tensorboard", "--cpu", "--quiet", "--streaming"]
    run = tmp_path / "run"
    assert example.main(["--dataset", str(folder), "--output-dir", str(run), *flags]) == 0
    # 4 train videos in batches of 2: one epoch of 2 steps, its length read from the card's split sizes.
    expected = {"pixel_values_videos": ((2, 4, 3, 32, 32), torch.float32), "bool_masked_pos": ((2, 8), torch.bool)}
    assert batches == [expected, expected]
    assert [int(line.split(",")[0]) for line in (run / "eval.csv").read_text().splitlines()] == [0, 2]

    # Shards without a card state no length: --max-steps is then required, and spans the schedule.
    bare = tmp_path / "bare"
    write_parquet_shards(datasets.load_dataset(str(folder)), bare)
    capsys.readouterr()
    assert example.main(["--dataset", str(bare), "--output-dir", str(tmp_path / "run2"), *flags]) == 1
    assert "give --max-steps" in capsys.readouterr().err
    batches.clear()
    assert example.main(["--dataset", str(bare), "--output-dir", str(tmp_path / "run3"), *flags, "--max-steps=2"]) == 0
    assert batches == [expected, expected]


def without_timing(records: dict) -> dict:
    return {video_id: {k: v for k, v in record.items() if k != "seconds"} for video_id, record in records.items()}


@pytest.mark.slow  # 13 s on 2 shared cores: two spawned workers each load MTCNN
def test_two_workers_prepare_what_one_does(prepared, tmp_path):
    from marlin_transformers.video.decoding import read_video

    root, out = prepared
    assert main(["prepare-ytf", str(root), str(tmp_path / "two"), "--quiet", "--num-workers", "2"]) == 0
    one, two = read_prepared_records(out), read_prepared_records(tmp_path / "two")
    assert without_timing(one) == without_timing(two) and len(one) == 6
    for video_id, record in one.items():
        arrays, other = (
            read_annotations(out / record["annotations"]),
            read_annotations(tmp_path / "two" / two[video_id]["annotations"]),
        )
        assert arrays.keys() == other.keys()
        for name in arrays:  # landmarks, parsing maps, frame indices, boxes, frame names: identical
            np.testing.assert_array_equal(arrays[name], other[name], err_msg=f"{video_id} {name}")
        # x264 gives other bytes from one run to the next, even from the same crops in one process (measured on
        # this tree: decoded frames of two encodings differ by at most 16 levels, 0.8 on average).
        frames, _ = read_video(out / record["clip"])
        again, _ = read_video(tmp_path / "two" / two[video_id]["clip"])
        difference = np.abs(frames.astype(np.int16) - again.astype(np.int16))
        assert frames.shape == again.shape and difference.mean() < 2.0 and difference.max() <= 40


def test_rank_shards_a_killed_run_left_are_merged_at_the_next_start(prepared, tmp_path, capsys):
    root, out = prepared
    copy = tmp_path / "prepared"
    shutil.copytree(out, copy)
    # A 2-process run killed before its merge: its records are still in the per-rank shards.
    lines = (copy / "manifest.jsonl").read_text().splitlines()
    (copy / "manifest.jsonl").write_text("".join(line + "\n" for line in lines[:2]))
    (copy / "manifest.rank0.jsonl").write_text("".join(line + "\n" for line in lines[2:4]))
    (copy / "manifest.rank1.jsonl").write_text("".join(line + "\n" for line in lines[4:]) + lines[4][:30])
    assert main(["prepare-ytf", str(root), str(copy), "--quiet"]) == 0
    assert "0 done, 6 already done, 0 failed" in capsys.readouterr().err
    assert not list(copy.glob("manifest.rank*")) and (copy / "manifest.jsonl").read_text().splitlines() == lines


@pytest.mark.slow  # 12 s on 2 shared cores: two processes, each with MTCNN
def test_torchrun_shares_the_videos_by_rank_and_merges_one_manifest(prepared, tmp_path):
    import os
    import subprocess
    import sys

    root, out = prepared
    target = tmp_path / "torchrun"
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "marlin_transformers.cli", "prepare-ytf", str(root), str(target), "--quiet"]
    process = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert process.returncode == 0, process.stderr[-3000:]
    assert "6 done, 0 already done, 0 failed" in process.stderr
    assert not list(target.glob("manifest.rank*"))
    ids = [json.loads(line)["video_id"] for line in (target / "manifest.jsonl").read_text().splitlines()]
    # Every video once; rank r took videos r, r + 2, ... of the sorted list, and the shards were merged in rank order.
    everything = sorted(read_prepared_records(out))
    assert ids == everything[0::2] + everything[1::2]
    assert without_timing(read_prepared_records(target)) == without_timing(read_prepared_records(out))
    assert (target / "train_set.csv").read_text() == (out / "train_set.csv").read_text()
