"""RAVDESS: file names decoded, protocols actor-disjoint, and the preparation on a fake tree in the release layout
(Actor_XX/MM-VV-EE-II-SS-RR-AA.mp4) of faces the test renders, with real MTCNN."""

import json
import re
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import finetuned_test_metrics, interrupt_crops_on
from marlin_transformers.cli import main
from marlin_transformers.data.labels import read_labels_csv
from marlin_transformers.data.ravdess import (
    EMOTIONS,
    NUM_ACTORS,
    PROTOCOLS,
    list_ravdess,
    load_ravdess,
    parse_ravdess_name,
    prepare_ravdess,
    ravdess_protocol,
    split_ravdess,
)
from marlin_transformers.data.task_preparation import SPLIT_ORDER, read_videos_csv
from marlin_transformers.exceptions import DatasetError
from test_finetune import finetune, tiny_model  # noqa: F401  (fixtures)
from video_factory import encode_video, moving_face_frames, write_audio_only

SINGLE = "single_label_classification"


def ravdess_name(modality=2, channel=1, emotion=6, intensity=1, statement=2, repetition=1, actor=12) -> str:
    return f"{modality:02d}-{channel:02d}-{emotion:02d}-{intensity:02d}-{statement:02d}-{repetition:02d}-{actor:02d}"


def touch_tree(root: Path, actors=range(1, NUM_ACTORS + 1), emotions=(1, 3), modalities=(1, 2, 3)) -> None:
    """Empty files named as released: both channels, both statements, audio-only .wav files beside the videos."""
    for actor in actors:
        folder = root / f"Actor_{actor:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for modality in modalities:
            for channel in (1, 2):
                for emotion in emotions:
                    for statement in (1, 2):
                        name = ravdess_name(modality, channel, emotion, 1, statement, 1, actor)
                        (folder / f"{name}.{'wav' if modality == 3 else 'mp4'}").write_bytes(b"")


def test_name_decoded_as_the_release_readme_says():
    # The release's own example: video-only, speech, fearful, normal, "dogs", first repetition, twelfth actor (female).
    file = parse_ravdess_name("Actor_12/02-01-06-01-02-01-12.mp4")
    assert file.id == "02-01-06-01-02-01-12" and file.recording == "01-06-01-02-01-12"
    assert file.fields() == {
        "modality": "video-only",
        "vocal_channel": "speech",
        "emotion": "fearful",
        "intensity": "normal",
        "statement": 2,
        "repetition": 1,
        "actor": 12,
        "sex": "female",
    }
    assert [parse_ravdess_name(ravdess_name(emotion=e)).emotion for e in range(1, 9)] == list(EMOTIONS)
    song = parse_ravdess_name(ravdess_name(modality=1, channel=2, intensity=2, actor=7))
    assert (song.modality, song.vocal_channel, song.intensity, song.sex) == ("full-av", "song", "strong", "male")
    assert parse_ravdess_name(ravdess_name(modality=3)).modality == "audio-only"


@pytest.mark.parametrize(
    "name, said",
    [
        ("02-01-06-01-02-01.mp4", "not a RAVDESS file name"),
        ("04-01-06-01-02-01-12.mp4", "modality code 04"),
        ("02-01-09-01-02-01-12.mp4", "emotion code 09"),
        ("02-01-06-01-02-01-25.mp4", "actor code 25"),
        ("02-01-01-02-02-01-12.mp4", "neutral (emotion 01) has no strong intensity"),
    ],
)
def test_bad_names_refused_naming_the_code(name, said):
    with pytest.raises(DatasetError, match=re.escape(said)):
        parse_ravdess_name(name)


def test_protocols_are_actor_disjoint_and_cover_every_actor():
    for protocol in PROTOCOLS.values():
        tested = []
        for fold in range(len(protocol.folds)):
            split = protocol.split(fold)
            train, val, test = (set(split[name]) for name in ("train", "val", "test"))
            assert not (train & val or train & test or val & test), (protocol.name, fold)
            assert train | val | test == set(range(1, NUM_ACTORS + 1)), (protocol.name, fold)
            assert val and test and len(train) >= 12
            tested.extend(test)
        assert protocol.source and protocol.note
        if protocol.name != "chumachenko5":  # its five folds test actors 1-20; 21-24 are only ever val
            assert sorted(tested) == list(range(1, NUM_ACTORS + 1)), protocol.name


def test_protocol_folds_as_their_sources_give_them():
    assert ravdess_protocol("chumachenko5").split(0) == {
        "train": tuple(range(9, 25)),
        "val": (5, 6, 7, 8),
        "test": (1, 2, 3, 4),
    }
    assert ravdess_protocol("chumachenko5").split(2)["test"] == (9, 10, 11, 12)
    assert ravdess_protocol("chumachenko5").split(2)["val"] == (13, 14, 15, 16)
    luna = ravdess_protocol("luna5")
    assert [luna.split(k)["test"] for k in range(5)] == [
        (2, 5, 14, 15, 16),
        (3, 6, 7, 13, 18),
        (10, 11, 12, 19, 20),
        (8, 17, 21, 23, 24),
        (1, 4, 9, 22),
    ]
    six = ravdess_protocol("six-fold")
    assert [six.split(k)["test"] for k in (0, 5)] == [(1, 2, 3, 4), (21, 22, 23, 24)]
    with pytest.raises(DatasetError, match="folds 0 to 5"):
        six.split(6)
    with pytest.raises(DatasetError, match="unknown RAVDESS protocol 'ten-fold'"):
        ravdess_protocol("ten-fold")


def test_listing_keeps_the_chosen_modality_and_channel_and_says_what_it_skipped(tmp_path):
    touch_tree(tmp_path, actors=(1, 2))
    (tmp_path / "Actor_01" / "notes.txt").write_text("x")
    (tmp_path / "Actor_01" / "01-01-01-01-01-01.mp4").write_bytes(b"")  # a name cut short
    listing = list_ravdess(tmp_path)
    assert {(f.modality, f.vocal_channel) for f in listing.files} == {("video-only", "speech")}
    assert len(listing.files) == 2 * 2 * 2  # actors x emotions x statements
    assert listing.paths["02-01-03-01-02-01-02"] == tmp_path / "Actor_02" / "02-01-03-01-02-01-02.mp4"
    skipped = listing.skipped
    assert skipped["Actor_01/03-01-01-01-01-01-01.wav"] == "audio-only: no face to crop"
    assert skipped["Actor_01/01-01-01-01-01-01-01.mp4"] == "full-av (preparing video-only)"
    assert skipped["Actor_01/02-02-01-01-01-01-01.mp4"] == "song (preparing speech)"
    assert skipped["Actor_01/notes.txt"] == "not a RAVDESS video"
    assert "not a RAVDESS file name" in skipped["Actor_01/01-01-01-01-01-01.mp4"]

    both = list_ravdess(tmp_path, modalities=("full-av", "video-only"), channel="both")
    assert len(both.files) == 2 * 2 * 2 * 2 * 2


def test_listing_errors(tmp_path):
    with pytest.raises(DatasetError, match="no Actor_XX folders"):
        list_ravdess(tmp_path)
    touch_tree(tmp_path, actors=(3,), modalities=(3,))
    with pytest.raises(DatasetError, match="no video-only speech videos"):
        list_ravdess(tmp_path)
    with pytest.raises(DatasetError, match="audio-only files have no face"):
        list_ravdess(tmp_path, modalities=("audio-only",))
    (tmp_path / "Actor_03" / f"{ravdess_name(actor=4)}.mp4").write_bytes(b"")
    with pytest.raises(DatasetError, match="actor 04 in the name, but the folder is Actor_03"):
        list_ravdess(tmp_path)


def test_split_follows_the_actor(tmp_path):
    touch_tree(tmp_path)
    files = list_ravdess(tmp_path).files
    split = split_ravdess(files, "chumachenko5", 0)
    actor_of = {f.id: f.actor for f in files}
    assert {actor_of[i] for i in split["test"]} == {1, 2, 3, 4}
    assert {actor_of[i] for i in split["val"]} == {5, 6, 7, 8}
    assert {actor_of[i] for i in split["train"]} == set(range(9, 25))
    assert sum(map(len, split.values())) == len(files)


# --- the preparation, on a fake tree of rendered faces, with real MTCNN -------------------------------------------

ACTORS = (1, 5, 9, 10)  # chumachenko5 fold 0: 1 test; 5 val; 9, 10 train
TREE_EMOTIONS = (3, 5)  # happy, angry
CORRUPT = "02-01-05-01-01-01-09"


def actor_face_frames(actor: int, num_frames: int = 6) -> np.ndarray:
    """The astronaut moving over the frame, tinted and shifted per actor: (num_frames, 120, 160, 3) uint8."""
    frames, _ = moving_face_frames(num_frames, height=120, width=160, scale=0.35)
    tint = np.array([1.0 - 0.03 * (actor % 5), 0.9 + 0.02 * (actor % 4), 0.85 + 0.03 * (actor % 3)])
    return np.roll(np.clip(frames * tint, 0, 255).astype(np.uint8), 2 * actor, axis=1)


def render_tree(root: Path) -> None:
    """The release layout: per actor and emotion a video-only and a full-AV speech file (the same frames), a song
    file and an audio-only .wav; one video-only file is corrupt."""
    for actor in ACTORS:
        folder = root / f"Actor_{actor:02d}"
        folder.mkdir(parents=True)
        frames = actor_face_frames(actor)
        for emotion in TREE_EMOTIONS:
            for modality in (1, 2):
                name = ravdess_name(modality, 1, emotion, 1, 1, 1, actor)
                encode_video(folder / f"{name}.mp4", frames, fps=10, with_audio=modality == 1)
            encode_video(folder / f"{ravdess_name(2, 2, emotion, 1, 1, 1, actor)}.mp4", frames[:2], fps=10)
            write_audio_only(folder / f"{ravdess_name(3, 1, emotion, 1, 1, 1, actor)}.wav", 0.2)
    (root / "Actor_09" / f"{CORRUPT}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("RAVDESS")
    render_tree(root)
    return root


@pytest.fixture(scope="module")
def prepared(tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    result = prepare_ravdess(tree, out, progress=False)
    assert list(result.failed) == [CORRUPT] and result.summary.done == 7
    return out


def test_prepare_writes_actor_disjoint_tables_of_face_clips(prepared):
    splits = {name: read_labels_csv(prepared / "ravdess" / f"{name}.csv", SINGLE) for name in SPLIT_ORDER}
    actors = {name: {int(Path(p).stem[-2:]) for p in table.paths} for name, table in splits.items()}
    assert actors == {"train": {9, 10}, "val": {5}, "test": {1}}  # 02-01-05-..-09 failed, 02-01-03-..-09 kept
    assert len(splits["train"].paths) == 3 and len(splits["test"].paths) == 2
    assert splits["test"].label_names == ["angry", "happy"]
    for path, label in zip(splits["test"].paths, splits["test"].labels):
        name = Path(path).stem
        assert Path(path).parent == prepared / "clips" and name.startswith("02-01-")  # video-only speech only
        assert splits["test"].label_names[label] == EMOTIONS[int(name[6:8]) - 1]
    with av.open(splits["val"].paths[0]) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 6 and frames[0].shape == (224, 224, 3)
    assert frames[0].std() > 20  # a face, not the zero padding of a missed detection


def test_videos_csv_and_preparation_json_say_everything(prepared, tree):
    rows = {row["id"]: row for row in read_videos_csv(prepared / "videos.csv")}
    assert len(rows) == len(ACTORS) * len(TREE_EMOTIONS)
    row = rows["02-01-03-01-01-01-10"]
    assert {k: row[k] for k in ("split", "label", "modality", "vocal_channel", "emotion", "intensity")} == {
        "split": "train",
        "label": "happy",
        "modality": "video-only",
        "vocal_channel": "speech",
        "emotion": "happy",
        "intensity": "normal",
    }
    assert (row["statement"], row["repetition"], row["actor"], row["sex"]) == ("1", "1", "10", "female")
    assert row["video"] == str(tree / "Actor_10" / "02-01-03-01-01-01-10.mp4") and row["clip"].startswith("clips/")
    assert rows[CORRUPT]["clip"] == "" and CORRUPT in rows[CORRUPT]["error"]
    record = json.loads((prepared / "preparation.json").read_text())
    protocol = record["protocol"]
    assert (protocol["name"], protocol["fold"], protocol["num_folds"]) == ("chumachenko5", 0, 5)
    assert "Chumachenko" in protocol["source"] and protocol["actors"]["test"] == [1, 2, 3, 4]
    assert protocol["skipped"]["by_reason"] == {
        "full-av (preparing video-only)": 8,
        "song (preparing speech)": 8,
        "audio-only: no face to crop": 8,
    }
    assert record["splits"] == {"train": 3, "val": 2, "test": 2}
    assert record["class_balance"]["ravdess"]["train"] == {
        **dict.fromkeys(sorted(EMOTIONS), 0),
        "angry": 1,
        "happy": 2,
    }
    assert list(record["failed"]) == [CORRUPT]
    dataset = load_ravdess(prepared)
    assert list(dataset) == ["train", "val", "test"] and dataset["test"].num_rows == 2
    emotion_of = {str(prepared / row["clip"]): row["emotion"] for row in read_videos_csv(prepared / "videos.csv")}
    for split in dataset.values():  # one class index per emotion in every split, whatever emotions a split holds
        classes = split.features["labels"]
        assert classes.names == sorted(EMOTIONS)
        assert [classes.int2str(label) for label in split["labels"]] == [emotion_of[p] for p in split["path"]]


def test_resume_after_a_kill_and_the_cli(tree, tmp_path, monkeypatch, capsys):
    interrupt_crops_on(monkeypatch, 3)  # a Ctrl-C or a kill between two videos
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        prepare_ravdess(tree, out, progress=False)
    assert not (out / "videos.csv").exists() and len(list((out / "clips").glob("*.mp4"))) == 2
    monkeypatch.undo()
    argv = ["prepare-ravdess", str(tree), str(out), "--quiet"]
    assert main(argv) == 1  # the corrupt video
    err = capsys.readouterr().err
    assert "5 done, 2 already done, 1 failed" in err and err.count(CORRUPT) == 1  # its one line
    assert len(read_labels_csv(out / "ravdess" / "test.csv", SINGLE).paths) == 2
    assert main([*argv, "--protocol", "six-fold", "--fold", "1"]) == 1  # another split, the same clips
    assert "0 done, 7 already done, 1 failed" in capsys.readouterr().err
    tables = {name: read_labels_csv(out / "ravdess" / f"{name}.csv", SINGLE).paths for name in SPLIT_ORDER}
    assert {name: {Path(p).stem[-2:] for p in paths} for name, paths in tables.items()} == {
        "train": {"01"},
        "val": {"09", "10"},
        "test": {"05"},
    }


def test_one_epoch_finetune_on_the_prepared_folder(finetune, tiny_model, prepared, tmp_path):  # noqa: F811
    metrics = finetuned_test_metrics(finetune, tiny_model, prepared, "ravdess", tmp_path / "run")
    for key in ("accuracy", "unweighted_accuracy", "weighted_f1", "unweighted_f1"):
        assert 0.0 <= metrics[f"test_{key}"] <= 1.0, key
    # the tree holds two emotions: the model learns those, and is scored per class on them
    assert {f"test_recall_{EMOTIONS[e - 1]}" for e in TREE_EMOTIONS} <= set(metrics)
