"""Path -> features: the pipeline, `marlin extract` (manifest, resume, bad inputs, sharding) and the demo."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from marlin_transformers import MarlinModel, MarlinVideoProcessor
from marlin_transformers.cli import main
from marlin_transformers.exceptions import SqueezedVideoWarning
from marlin_transformers.extraction import MarlinFeatureExtractor, extract_features, extract_video
from marlin_transformers.extraction.job import output_names
from marlin_transformers.extraction.pipeline import VideoWindows
from marlin_transformers.video import find_videos, read_video
from video_factory import encode_video, indexed_frames, moving_face_frames, write_audio_only


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    (root / "a").mkdir()
    (root / "b").mkdir()
    encode_video(root / "a" / "clip.mp4", indexed_frames(40, 64, 64))
    encode_video(root / "b" / "clip.mkv", indexed_frames(20, 64, 64))  # same stem, other folder
    encode_video(root / "short.webm", indexed_frames(9, 64, 64))
    return root


def test_features_equal_model_on_the_same_frames(tiny_model_dir, videos):
    extractor = MarlinFeatureExtractor(tiny_model_dir, batch_size=2)
    result = extractor(videos / "a" / "clip.mp4", keep_crops=True)
    # 40 frames: windows 0..30, then one aligned to the last frame (9..39)
    assert [w["frame_indices"][0] for w in result.windows] == [0, 9]
    assert result.windows[1]["frame_indices"][-1] == 39
    assert result.features.shape == (2, 32) and result.features.dtype == np.float32
    frames, _ = read_video(videos / "a" / "clip.mp4")
    model = MarlinModel.from_pretrained(tiny_model_dir).eval()
    processor = MarlinVideoProcessor(size={"height": 32, "width": 32})
    for features, window in zip(result.features, result.windows):
        clip = frames[window["frame_indices"]]
        pixel_values = processor(clip, return_tensors="pt")["pixel_values_videos"]
        assert pixel_values.shape == (1, 16, 3, 32, 32) and 0 <= pixel_values.min() and pixel_values.max() <= 1
        with torch.no_grad():
            expected = model(pixel_values).pooler_output[0].numpy()
        np.testing.assert_allclose(features, expected, atol=1e-5)


def test_cropped_video_features_equal_model_on_the_crops(tiny_model_dir, tmp_path):
    frames, _ = moving_face_frames(34)
    path = encode_video(tmp_path / "face.mp4", frames)
    extractor = MarlinFeatureExtractor(tiny_model_dir, crop_face=True, keep_seq=True)
    result = extractor(path, keep_crops=True)
    assert result.crops.shape == (2, 16, 224, 224, 3)
    assert all(w["face_detected_fraction"] > 0.8 for w in result.windows)
    model = MarlinModel.from_pretrained(tiny_model_dir).eval()
    pixel_values = MarlinVideoProcessor(size={"height": 32, "width": 32})(list(result.crops), return_tensors="pt")[
        "pixel_values_videos"
    ]
    with torch.no_grad():
        expected = model(pixel_values).last_hidden_state.numpy()
    assert result.features.shape == (2, 8 * 2 * 2, 32)
    np.testing.assert_allclose(result.features, expected, atol=1e-5)


def test_reference_compatible_calls(tiny_model_dir, videos):
    model = MarlinModel.from_pretrained(tiny_model_dir).eval()
    features = extract_video(videos / "a" / "clip.mp4", model)
    assert features.shape == (2, 32)
    assert extract_video(videos / "a" / "clip.mp4", model, reduction="mean").shape == (32,)
    clip = torch.rand(1, 3, 16, 32, 32)  # the reference's (B, C, T, H, W)
    assert extract_features(model, clip, keep_seq=True).shape == (1, 32, 32)
    pooled = extract_features(model, clip, keep_seq=False)
    torch.testing.assert_close(pooled, model(clip.transpose(1, 2)).pooler_output)


def test_inputs_and_unique_output_names(videos, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"# my videos\n{videos / 'short.webm'}\n\nmissing.mp4\n")
    found = find_videos([videos, listing], keep_missing=True)
    assert [p.name for p in found] == ["clip.mp4", "clip.mkv", "short.webm", "missing.mp4"]
    assert found[3] == (tmp_path / "missing.mp4").absolute()
    names = output_names(found)
    assert names[found[2]] == "short.npy"
    assert names[found[0]] != names[found[1]] and all(names[p].startswith("clip-") for p in found[:2])


def test_cli_extract_manifest_errors_and_resume(tiny_model_dir, videos, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.mp4").write_bytes(b"")
    (bad / "text.mp4").write_text("not a video")
    write_audio_only(bad / "audio.mp4")
    out = tmp_path / "features"
    args = ["extract", str(videos), str(bad), str(tmp_path / "gone.mp4"), "--model", str(tiny_model_dir)]
    args += ["--out", str(out), "--quiet"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    error_lines = [line for line in err.splitlines() if line.startswith("marlin extract: /")]
    assert len(error_lines) == 4, err
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    by_name = {os.path.basename(r["input"]): r for r in records}
    assert {r["status"] for r in records} == {"ok", "error"} and len(records) == 7
    for name in ("empty.mp4", "text.mp4", "audio.mp4", "gone.mp4"):
        assert by_name[name]["status"] == "error" and by_name[name]["error"] and by_name[name]["output"] is None
    short = by_name["short.webm"]
    assert short["status"] == "ok" and short["windows"][0]["num_padded"] == 11
    assert set(short["windows"][0]) >= {"frame_indices", "start_time", "end_time", "face_detected_fraction"}
    assert np.load(out / short["output"]).shape == (1, 32)
    outputs = [r["output"] for r in records if r["status"] == "ok"]
    assert len(set(outputs)) == 3 and not list(out.glob("*.partial"))

    stamp = os.stat(out / short["output"]).st_mtime_ns
    assert main(args) == 1  # the bad inputs are tried again and fail again
    err = capsys.readouterr().err
    assert "0 done, 3 already done, 4 failed" in err
    assert os.stat(out / short["output"]).st_mtime_ns == stamp
    assert main(["extract", str(videos), "--model", str(tiny_model_dir), "--out", str(out), "--quiet"]) == 0


def test_cli_extract_keep_seq_and_checkpoint_file_model(tmp_path, videos):
    from pathlib import Path

    fixtures = Path(__file__).parent / "fixtures" / "parity"
    out = tmp_path / "seq"
    args = ["extract", str(videos / "short.webm"), "--model", str(fixtures / "tiny.encoder.pt"), "--keep-seq"]
    # the tiny fixture's heads (2) differ from width / 64: converting it on the fly still loads (heads only split
    # the attention), so this checks the file path of --model, not parity
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    record = json.loads((out / "manifest.jsonl").read_text())
    assert np.load(out / record["output"]).shape == (1, 128, 64)


def test_cli_extract_without_weights_says_how_to_pass_a_checkpoint(tmp_path, videos, capsys):
    out = tmp_path / "none"
    code = main(["extract", str(videos / "short.webm"), "--model", "no-such-model", "--out", str(out)])
    assert code == 1
    err = capsys.readouterr().err
    assert "marlin_vit_base_ytf.encoder.pt" in err and "Traceback" not in err


@pytest.mark.slow
def test_extract_shards_over_two_processes(tiny_model_dir, videos, tmp_path):
    out = tmp_path / "sharded"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "marlin_transformers.cli"]
    command += ["extract", str(videos), "--model", str(tiny_model_dir), "--out", str(out), "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    # One summary, from the main process, counting both processes' work.
    assert result.stderr.count("already done") == 1, result.stderr[-3000:]
    assert "marlin extract: 3 done, 0 already done, 0 failed" in result.stderr
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(os.path.basename(r["input"]) for r in records) == ["clip.mkv", "clip.mp4", "short.webm"]
    assert all(r["status"] == "ok" for r in records) and not list(out.glob("manifest.rank*"))


def test_cli_extract_summary_names_the_manifest_once(tiny_model_dir, videos, tmp_path, capsys):
    out = f"{tmp_path / 'features'}/"  # as a shell's completion types it
    assert main(["extract", str(videos / "short.webm"), "--model", str(tiny_model_dir), "--out", out, "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"see {tmp_path / 'features' / 'manifest.jsonl'}" in err and "//" not in err
    assert "Loading weights" not in err and err.count("\n") == 1  # --quiet: the summary line only
    record = json.loads((tmp_path / "features" / "manifest.jsonl").read_text())
    assert (record["num_frames"], record["image_size"], record["sample_rate"]) == (16, 32, 2)  # the model's, in effect


def test_cli_extract_other_clip_lengths_and_sizes(tiny_model_dir, videos, tmp_path, capsys):
    # The tiny model reads 16 frames of 32 pixels (16-pixel patches): 8 frames of 48 pixels are 4 x 3 x 3 tokens.
    out = tmp_path / "other_shape"
    args = ["extract", str(videos / "a" / "clip.mp4"), "--model", str(tiny_model_dir), "--quiet"]
    assert main([*args, "--out", str(out), "--num-frames", "8", "--image-size", "48", "--keep-seq"]) == 0
    record = json.loads((out / "manifest.jsonl").read_text())
    assert (record["num_frames"], record["image_size"]) == (8, 48)
    features = np.load(out / record["output"])
    assert features.shape == (len(record["windows"]), 36, 32)
    assert all(len(window["frame_indices"]) == 8 for window in record["windows"])
    # The same numbers as the model on the same frames, read with interpolate_pos_encoding.
    frames, _ = read_video(videos / "a" / "clip.mp4")
    model = MarlinModel.from_pretrained(tiny_model_dir).eval()
    processor = MarlinVideoProcessor(size={"height": 48, "width": 48}, num_frames=8)
    pixel_values = processor(frames[record["windows"][0]["frame_indices"]], return_tensors="pt")["pixel_values_videos"]
    assert pixel_values.shape == (1, 8, 3, 48, 48)
    with torch.no_grad():
        expected = model(pixel_values, interpolate_pos_encoding=True).last_hidden_state[0].numpy()
    np.testing.assert_allclose(features[0], expected, atol=1e-5)

    assert main([*args, "--out", str(tmp_path / "bad"), "--image-size", "40"]) == 1
    assert "multiples of 16" in capsys.readouterr().err


def test_extractor_compiled_encoder_gives_the_eager_features(tiny_model_dir, videos):
    eager = MarlinFeatureExtractor(tiny_model_dir, batch_size=2)(videos / "a" / "clip.mp4")
    compiled = MarlinFeatureExtractor(tiny_model_dir, batch_size=2, compile=True)(videos / "a" / "clip.mp4")
    # Inductor fuses and reorders fp32 arithmetic (see test_modeling's export/compile test for the measured spread).
    np.testing.assert_allclose(compiled.features, eager.features, atol=5e-6, rtol=0)


@pytest.mark.parametrize("keep_seq", [False, True])
def test_a_cpu_encoder_takes_a_batch_two_clips_at_a_time_with_the_same_features(tiny_model_dir, keep_seq):
    from marlin_transformers.extraction import extractor as extractor_module

    assert extractor_module.CPU_CLIPS_PER_CALL == 2
    extractor = MarlinFeatureExtractor(tiny_model_dir, batch_size=5, keep_seq=keep_seq)
    clips = torch.rand(5, 16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    calls = []
    encode = extractor.encode
    extractor.encode = lambda pixel_values, **kwargs: (
        calls.append(len(pixel_values)),
        encode(pixel_values, **kwargs),
    )[1]
    features = extractor.extract_clips(clips)
    assert calls == [2, 2, 1]
    with torch.inference_mode():
        whole = encode(clips)
    expected = whole.last_hidden_state if keep_seq else whole.pooler_output
    # A clip's features do not depend on the clips beside it: equal to the last bit in fp32.
    torch.testing.assert_close(features, expected, atol=0, rtol=0)


def test_window_progress_counts_encoded_windows(tiny_model_dir, videos):
    extractor = MarlinFeatureExtractor(tiny_model_dir, batch_size=2)
    encoded = []
    encode = extractor.extract_clips
    extractor.extract_clips = lambda clips: (encoded.append(len(clips)), encode(clips))[1]

    class Bar:
        shown = 0

        def update(self, n):
            self.shown += n
            assert self.shown == sum(encoded)  # never ahead of the encoder

    bar = Bar()
    result = extractor(videos / "a" / "clip.mp4", progress=bar)
    assert bar.shown == len(result.windows) == sum(encoded) > 0


def test_outputs_are_bound_to_their_input_and_settings(tiny_model_dir, tmp_path, capsys):
    day1, day2, out = tmp_path / "day1", tmp_path / "day2", tmp_path / "features"
    day1.mkdir()
    day2.mkdir()
    encode_video(day1 / "clip.mp4", indexed_frames(20, 64, 64))
    encode_video(day2 / "clip.mp4", indexed_frames(24, 64, 64))
    run = ["extract", "--model", str(tiny_model_dir), "--out", str(out), "--quiet"]

    # Same name in two runs: the second input gets its own file, and the first stays done and untouched.
    assert main([run[0], str(day1 / "clip.mp4"), *run[1:]]) == 0
    first = (out / "clip.npy").read_bytes()
    assert main([run[0], str(day2 / "clip.mp4"), *run[1:]]) == 0
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len({r["output"] for r in records}) == 2 and (out / "clip.npy").read_bytes() == first
    capsys.readouterr()
    assert main([run[0], str(day1 / "clip.mp4"), *run[1:]]) == 0
    assert "0 done, 1 already done" in capsys.readouterr().err

    # The input changed since: done again, not skipped.
    encode_video(day1 / "clip.mp4", indexed_frames(40, 64, 64))
    assert main([run[0], str(day1 / "clip.mp4"), *run[1:]]) == 0
    assert "1 done, 0 already done" in capsys.readouterr().err

    # Other settings into the same folder: one line, nothing written.
    before = (out / "manifest.jsonl").read_text()
    assert main([run[0], str(day1 / "clip.mp4"), *run[1:], "--keep-seq"]) == 1
    err = capsys.readouterr().err
    assert "holds features made with other settings (keep_seq)" in err and err.count("\n") == 1
    assert (out / "manifest.jsonl").read_text() == before

    # A refused run releases the folder at once, even while its error (and so its frames) is still held, as a
    # notebook holds the last traceback.
    import fcntl

    from marlin_transformers.exceptions import MarlinError
    from marlin_transformers.extraction.job import run_extraction

    with pytest.raises(MarlinError) as refused:
        run_extraction([day1 / "clip.mp4"], out, lambda device: None, settings={"other": True}, show_progress=False)
    with open(out / ".marlin-extract.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises BlockingIOError if the refused run still held it
    assert refused.value.__traceback__ is not None


def test_manifest_survives_a_torn_line_and_stranded_process_records(tiny_model_dir, videos, tmp_path, capsys):
    out = tmp_path / "features"
    run = ["extract", "--model", str(tiny_model_dir), "--out", str(out), "--quiet"]
    assert main([run[0], str(videos / "short.webm"), *run[1:]]) == 0
    done = (out / "manifest.jsonl").read_text()
    # A crash mid-write left half a line; a killed multi-process run left a process's records in its shard.
    (out / "manifest.jsonl").write_text(done + '{"input": "/cut/short')
    record = json.loads(done)
    stranded = {**record, "input": str(videos / "a" / "clip.mp4"), "output": "stranded.npy"}
    (out / "manifest.rank1.jsonl").write_text(json.dumps(stranded))  # no final newline either
    np.save(out / "stranded.npy", np.zeros((2, 32), np.float32))
    assert main([run[0], str(videos / "b" / "clip.mkv"), *run[1:]]) == 0
    assert not list(out.glob("manifest.rank*"))
    lines = (out / "manifest.jsonl").read_text().splitlines()
    parsed = [json.loads(line) for line in lines]  # the torn fragment was cut off, nothing glued to it
    assert [os.path.basename(r["input"]) for r in parsed] == ["short.webm", "clip.mp4", "clip.mkv"]

    # A whole record that only lacks its newline (saved by an editor, say) is kept and completed.
    (out / "manifest.jsonl").write_text("\n".join(lines))
    assert main([run[0], str(videos / "short.webm"), *run[1:]]) == 0
    assert [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()] == parsed


def test_a_folder_another_run_holds_is_refused_and_a_dead_run_leaves_no_lock(tiny_model_dir, videos, tmp_path, capsys):
    import fcntl

    out = tmp_path / "features"
    out.mkdir()
    run = ["extract", str(videos / "short.webm"), "--model", str(tiny_model_dir), "--out", str(out), "--quiet"]
    with open(out / ".marlin-extract.lock", "a") as held:  # another run, alive, holds the folder
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(run) == 1
        assert "another marlin extract is writing into this folder" in capsys.readouterr().err
        assert not (out / "manifest.jsonl").exists()
    # A run killed with -9 while holding the folder: the OS drops its lock, and the next run goes ahead.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import fcntl, time; f = open({str(out / '.marlin-extract.lock')!r}, 'a'); "
            "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    assert main(run) == 0


@pytest.fixture(scope="module")
def face_videos(tmp_path_factory):
    """A list of face videos of several lengths with an unreadable one in the middle, in the order given."""
    root = tmp_path_factory.mktemp("face_videos")
    paths = []
    for name, num_frames in (("first", 34), ("short", 9), ("bad", 0), ("long", 50), ("last", 20)):
        if num_frames:
            frames, _ = moving_face_frames(num_frames, height=120, width=160, scale=0.35)
            paths.append(encode_video(root / f"{name}.mp4", frames))
        else:
            paths.append(root / f"{name}.mp4")
            paths[-1].write_text("not a video")
    listing = root / "list.txt"
    listing.write_text("".join(f"{path}\n" for path in paths))
    return listing


@pytest.mark.parametrize("crop_face", [False, True], ids=["frames", "crop-face"])
def test_pipelined_extraction_equals_the_serial_path_to_the_bit(tiny_model_dir, face_videos, tmp_path, crop_face):
    runs = {}
    for num_workers in (0, 2):
        out = tmp_path / f"workers{num_workers}"
        args = ["extract", str(face_videos), "--model", str(tiny_model_dir), "--out", str(out), "--quiet"]
        args += ["--batch-size", "3", "--num-workers", str(num_workers)] + (["--crop-face"] if crop_face else [])
        assert main(args) == 1  # the unreadable video
        records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
        for record in records:
            del record["seconds"]
        outputs = {r["output"]: (out / r["output"]).read_bytes() for r in records if r["output"]}
        runs[num_workers] = records, outputs
    (serial, serial_outputs), (pipelined, pipelined_outputs) = runs[0], runs[2]
    # Records in input order, the bad one failed with the same line, the others ok, windows packed across videos.
    assert [os.path.basename(r["input"]) for r in pipelined] == [
        "first.mp4",
        "short.mp4",
        "bad.mp4",
        "long.mp4",
        "last.mp4",
    ]
    assert [r["status"] for r in pipelined] == ["ok", "ok", "error", "ok", "ok"]
    assert pipelined == serial
    assert pipelined_outputs.keys() == serial_outputs.keys() and len(serial_outputs) == 4
    for name, data in serial_outputs.items():
        assert pipelined_outputs[name] == data, name  # the .npy files, byte for byte

    # A re-run resumes: nothing left to do.
    args = ["extract", str(face_videos), "--model", str(tiny_model_dir), "--out", str(tmp_path / "workers2")]
    assert main(args + ["--quiet", "--num-workers", "2"] + (["--crop-face"] if crop_face else [])) == 1


def test_workers_detecting_through_one_shared_detector_give_the_serial_features(
    tiny_model_dir, face_videos, monkeypatch
):
    from marlin_transformers.extraction.pipeline import iter_outcomes
    from marlin_transformers.video import MtcnnDetector

    paths = [Path(line) for line in face_videos.read_text().splitlines()]
    extractor = MarlinFeatureExtractor(tiny_model_dir, crop_face=True, batch_size=3)
    serial = list(iter_outcomes(extractor, paths))

    def no_mtcnn_here(self):
        raise AssertionError("a worker loaded its own MTCNN")

    monkeypatch.setattr(MtcnnDetector, "load", no_mtcnn_here)  # in the forked workers; the server is spawned
    shared = list(iter_outcomes(extractor, paths, num_workers=2, shared_detection=True))
    assert [o.path for o in shared] == paths
    assert [o.error is None for o in shared] == [o.error is None for o in serial] == [True, True, False, True, True]
    for ours, theirs in zip(shared, serial):
        if theirs.error is None:
            assert ours.result.windows == theirs.result.windows
            # Detections batched with the other worker's frames move by float rounding only (1e-5 pixels,
            # tests/test_shared_detection.py); here the crops, and so the features, came out the same to the bit.
            np.testing.assert_array_equal(ours.result.features, theirs.result.features)


def test_a_decoding_worker_that_dies_is_one_line_and_the_rerun_resumes(
    tiny_model_dir, face_videos, tmp_path, capsys, monkeypatch
):
    import signal

    from marlin_transformers.extraction import pipeline

    real_iter_clips = pipeline.iter_clips

    def dying(path, *args):
        if "long" in str(path):
            os.kill(os.getpid(), signal.SIGKILL)  # in the worker, forked with this patch
        return real_iter_clips(path, *args)

    monkeypatch.setattr(pipeline, "iter_clips", dying)
    args = ["extract", str(face_videos), "--model", str(tiny_model_dir), "--out", str(tmp_path), "--quiet"]
    assert main(args + ["--num-workers", "2"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "a decoding worker died" in err and "--num-workers 0" in err
    monkeypatch.setattr(pipeline, "iter_clips", real_iter_clips)
    assert main(args + ["--num-workers", "2"]) == 1  # only the unreadable video fails now
    records = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert sum(r["status"] == "ok" for r in records) == 4


class _Windows:
    """A data loader iterator whose next window fails as `error` does; records that its workers were stopped."""

    def __init__(self, error):
        self.error, self.stopped = error, False

    def __iter__(self):
        return self

    def __next__(self):
        raise self.error

    def _shutdown_workers(self):
        self.stopped = True


@pytest.mark.parametrize(
    "error",
    [  # how a killed worker shows, depending on when it dies: torch's SIGCHLD error, or its half-sent window's socket
        RuntimeError("DataLoader worker (pid 123) is killed by signal: Killed."),
        ConnectionResetError(104, "Connection reset by peer"),
        EOFError(),
    ],
)
def test_a_dead_worker_is_one_line_however_it_shows(error):
    from marlin_transformers.exceptions import MarlinError
    from marlin_transformers.extraction.pipeline import running_workers

    windows = _Windows(error)
    with pytest.raises(MarlinError, match=r"^0 to decode in the main process, .*: a decoding worker died \(\S+"):
        with running_workers(windows) as running:  # the loader and its iterator in one
            next(running)
    assert windows.stopped


def test_other_errors_leave_the_workers_stopped_and_pass_through():
    from marlin_transformers.extraction.pipeline import running_workers

    windows = _Windows(RuntimeError("CUDA out of memory"))
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        with running_workers(windows) as running:
            next(running)
    assert windows.stopped


def test_frames_far_from_square_without_crop_face_are_said_once_a_video(tiny_model_dir, tmp_path, capsys):
    wide, near = tmp_path / "wide.mp4", tmp_path / "near.mp4"
    encode_video(wide, indexed_frames(40, 48, 96))  # 96x48: width / height 2.0, two windows
    encode_video(near, indexed_frames(40, 60, 64))  # 64x60: 1.07, square enough
    extractor = MarlinFeatureExtractor(tiny_model_dir)
    expected = rf"^{wide} is 96x48; without crop_face it is squeezed to 32x32; pass crop_face=True"
    with pytest.warns(SqueezedVideoWarning, match=expected) as said:
        extractor(wide)
    assert len(said) == 1  # once a video, not once a window
    with pytest.warns(SqueezedVideoWarning, match=expected) as said:  # the pipelined path's windows too
        assert len(list(VideoWindows([wide], extractor))) == 3  # two windows and the end of the video
    assert len(said) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", SqueezedVideoWarning)
        extractor(near)

    # The command line says it in one line, with its flag, once a video.
    run = ["extract", str(wide), str(near), str(wide), "--model", str(tiny_model_dir), "--quiet"]
    capsys.readouterr()  # what the library calls above printed (transformers' loading bars)
    assert main([*run, "--out", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == (
        f"marlin: {wide} is 96x48; without --crop-face it is squeezed to 32x32; add --crop-face for in-the-wild video"
    )
    assert len(lines) == 2 and lines[1].startswith("marlin extract: ")  # that line, then the summary


@pytest.mark.parametrize("num_workers", [0, 2], ids=["serial", "pipelined"])
def test_timings_say_where_the_time_went(tiny_model_dir, tmp_path, capsys, num_workers):
    frames, _ = moving_face_frames(34, height=120, width=160, scale=0.35)
    video = encode_video(tmp_path / "face.mp4", frames)
    args = ["extract", str(video), "--model", str(tiny_model_dir), "--out", str(tmp_path / "out"), "--quiet"]
    assert main(args + ["--crop-face", "--timings", "--num-workers", str(num_workers)]) == 0
    line = next(line for line in capsys.readouterr().err.splitlines() if "seconds:" in line)
    parts = (part.rsplit(" ", 1) for part in line.split("seconds:")[1].split(","))
    timings = {stage.strip(): float(seconds) for stage, seconds in parts}
    stages = ["model load", "decode", "detection", "tracking", "crop", "process", "encode", "write", "job"]
    assert sorted(timings) == sorted(stages)
    assert min(timings[stage] for stage in ("detection", "encode", "job")) > 0  # decoding 34 small frames: ~0
    if not num_workers:  # one process: its stages are parts of the job
        # The 9 figures are printed to the millisecond, each off by up to 0.0005 s. (When the job was printed to the
        # hundredth, a 0.24 s job whose stages took all but a few milliseconds once failed: 0.242 against 0.24.)
        assert sum(timings[stage] for stage in stages[:-1]) <= timings["job"] + len(stages) * 0.0005


def test_the_face_detector_runs_on_the_extraction_device(tiny_model_dir, monkeypatch):
    import facenet_pytorch

    devices = []
    real = facenet_pytorch.MTCNN

    def recording(*args, **kwargs):
        devices.append(kwargs.get("device"))
        return real(*args, **kwargs)

    monkeypatch.setattr(facenet_pytorch, "MTCNN", recording)
    extractor = MarlinFeatureExtractor(tiny_model_dir, device=torch.device("cpu"), crop_face=True)
    extractor.tracker.detector.detect(np.zeros((1, 64, 64, 3), np.uint8))
    assert devices == ["cpu"]


def test_default_workers_feed_a_gpu_and_leave_a_small_cpu_to_the_encoder(monkeypatch):
    from marlin_transformers.extraction import pipeline

    for cores, cpu, gpu in ((1, 0, 1), (2, 0, 1), (8, 4, 7), (16, 4, 15), (64, 4, 17)):
        monkeypatch.setattr(pipeline.os, "sched_getaffinity", lambda pid, cores=cores: set(range(cores)))
        assert (pipeline.default_num_workers("cpu"), pipeline.default_num_workers("cuda")) == (cpu, gpu), cores
    # Two batches queued over all the workers, and never fewer than the data loader's default per worker.
    assert [pipeline.prefetch_factor(w, 8) for w in (0, 1, 3, 15)] == [16, 16, 6, 2]
