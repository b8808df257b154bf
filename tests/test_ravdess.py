"""RAVDESS: file names decoded, protocols actor-disjoint, and the preparation on a fake tree in the release layout
(Actor_XX/MM-VV-EE-II-SS-RR-AA.mp4) of faces the test renders, with real MTCNN."""

import re
from pathlib import Path

import pytest

from marlin_transformers.data.ravdess import (
    EMOTIONS,
    NUM_ACTORS,
    PROTOCOLS,
    list_ravdess,
    parse_ravdess_name,
    ravdess_protocol,
    split_ravdess,
)
from marlin_transformers.exceptions import DatasetError


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
