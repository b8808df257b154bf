"""Faults a careless or hostile user meets: wrong models, full disks, file-size limits, kills at any point, garbage
in the manifest, odd inputs. Each test checks that nothing is lost, nothing is mixed, and every error is one line.

Kills are real `SIGKILL`s of `marlin extract` subprocesses; a full disk is a small tmpfs (mounting needs root, as CI
and these machines run; elsewhere those tests skip and say so); a file-size limit is `RLIMIT_FSIZE` in a subprocess.
"""

import contextlib
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_CLIP
from marlin_transformers import MarlinConfig, MarlinModel
from marlin_transformers.cli import main
from marlin_transformers.convert_marlin import check_model_outputs
from marlin_transformers.exceptions import CheckpointError
from marlin_transformers.extraction.job import MANIFEST, read_manifest_records
from marlin_transformers.hub_folders import save_marlin_folder
from video_factory import encode_video, indexed_frames

FIXTURES = Path(__file__).parent / "fixtures" / "parity"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Eight small videos of different lengths (1 to 3 windows each)."""
    root = tmp_path_factory.mktemp("corpus")
    for i in range(8):
        encode_video(root / f"v{i}.mp4", indexed_frames(20 + 12 * i, 64, 64))
    return root


def extract_args(inputs, model, out, *extra) -> list[str]:
    return ["extract", *map(str, inputs), "--model", str(model), "--out", str(out), "--quiet", *extra]


def run_cli(args: list[str], timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "marlin_transformers.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)


def assert_consistent(out: Path, expected_inputs: int | None = None) -> dict[str, dict]:
    """Every manifest line parses, every ok record's file exists with its recorded shape, no temporary file is
    left, and no two inputs share an output."""
    lines = (out / MANIFEST).read_text().splitlines()
    for line in lines:
        json.loads(line)  # a torn or glued line fails here
    records = read_manifest_records(out)
    done = {k: r for k, r in records.items() if r["status"] == "ok"}
    for record in done.values():
        assert list(np.load(out / record["output"]).shape) == record["shape"]
    assert len({r["output"] for r in done.values()}) == len(done)
    assert not [p for p in out.iterdir() if p.name.endswith(".partial")]
    if expected_inputs is not None:
        assert len(done) == expected_inputs
    return records


def features_by_input(out: Path) -> dict[str, bytes]:
    return {k: (out / r["output"]).read_bytes() for k, r in read_manifest_records(out).items() if r["status"] == "ok"}


@pytest.fixture(scope="module")
def clean_run(tiny_model_dir, corpus, tmp_path_factory):
    """The corpus extracted once without faults: what every faulted run must end up with, byte for byte."""
    out = tmp_path_factory.mktemp("clean") / "features"
    assert main(extract_args([corpus], tiny_model_dir, out)) == 0
    return features_by_input(out)


@contextlib.contextmanager
def small_filesystem(path: Path, size: str, read_only: bool = False):
    """A tmpfs of `size` mounted at `path` (needs root: the test skips, saying so, where mounting is refused)."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.decode().strip()}): needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


# ---- wrong models (case 3) and unreadable checkpoints (case 11): refused before any video is read --------------


def broken_folder(source: Path, root: Path, name: str, edit) -> Path:
    folder = root / name
    shutil.copytree(source, folder)
    edit(folder)
    return folder


def edit_config(**fields):
    def edit(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        config.update(fields)
        (folder / "config.json").write_text(json.dumps(config))

    return edit


def no_weights(folder: Path) -> None:
    from safetensors.torch import save_file

    save_file({"unrelated.weight": torch.zeros(2)}, str(folder / "model.safetensors"))


def truncate_weights(folder: Path) -> None:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


def nan_weights(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / "model.safetensors"))
    tensors["layernorm.weight"][0] = float("nan")
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


@pytest.mark.parametrize(
    "name, edit, said",
    [
        ("no_weights", no_weights, "missing"),
        ("zero_layers", edit_config(num_hidden_layers=-1), "num_hidden_layers must be at least 1"),
        ("negative_eps", edit_config(layer_norm_eps=-1.0), "layer_norm_eps must be above 0"),
        ("width_33", edit_config(hidden_size=33), "hidden_size (33) must be a multiple of num_attention_heads"),
        ("zero_heads", edit_config(num_attention_heads=0), "num_attention_heads must be at least 1"),
        ("text_width", edit_config(hidden_size="abc"), "expected int"),
        ("patch_64", edit_config(patch_size=64), "must be a multiple of patch_size (64)"),
        ("no_config", lambda folder: (folder / "config.json").unlink(), "cannot load this model"),
        ("garbage_config", lambda folder: (folder / "config.json").write_text("{not json"), "cannot load"),
        ("truncated", truncate_weights, "truncated or corrupt"),
        ("nan_weights", nan_weights, "NaN or inf"),
    ],
)
def test_a_wrong_model_stops_extraction_with_one_line_before_any_video(
    tiny_model_dir, corpus, tmp_path, capsys, name, edit, said
):
    folder = broken_folder(tiny_model_dir, tmp_path, name, edit)
    out = tmp_path / "features"
    assert main(extract_args([corpus / "v0.mp4"], folder, out)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(folder) in err and said in err, err
    assert not (out / MANIFEST).exists() and not list(out.glob("*.npy"))


def test_a_model_that_gives_nan_is_refused_even_with_finite_weights():
    model = MarlinModel(MarlinConfig(**TINY_CLIP)).eval()
    check_model_outputs(model, "ok")  # a sound model passes
    with torch.no_grad():  # finite weights whose products overflow float32: inf, then NaN after the LayerNorm
        model.encoder.layer[0].mlp.fc1.weight.fill_(3e38)
    with pytest.raises(CheckpointError, match="NaN or inf features"):
        check_model_outputs(model, "broken")


def test_extraction_never_writes_nan_features_as_ok(tiny_model_dir, corpus, tmp_path, capsys):
    from marlin_transformers.extraction import MarlinFeatureExtractor

    extractor = MarlinFeatureExtractor(tiny_model_dir)
    with torch.no_grad():
        extractor.model.layernorm.weight[0] = float("inf")
    with pytest.raises(Exception, match="NaN or inf features"):
        extractor(corpus / "v0.mp4")


def reference_checkpoint(tmp_path: Path, name: str, edit) -> Path:
    state_dict = torch.load(FIXTURES / "tiny.full.pt", weights_only=True)
    path = tmp_path / name
    torch.save(edit(dict(state_dict)), path)
    return path


@pytest.mark.parametrize(
    "name, make, said",
    [
        ("empty.pt", lambda p: p.write_bytes(b"") or p, "not a readable PyTorch checkpoint"),
        (
            "no_mlp.ckpt",
            lambda p: reference_checkpoint(
                p.parent, p.name, lambda sd: {"state_dict": {k: v for k, v in sd.items() if ".mlp." not in k}}
            ),
            "missing key encoder.blocks.0.mlp.layers.0.linear.weight",
        ),
        (
            "nan.full.pt",
            lambda p: reference_checkpoint(
                p.parent,
                p.name,
                lambda sd: {**sd, "encoder.norm.weight": torch.full_like(sd["encoder.norm.weight"], float("nan"))},
            ),
            "NaN or inf",
        ),
    ],
)
def test_unreadable_checkpoints_are_one_line_in_convert_and_extract(tmp_path, corpus, capsys, name, make, said):
    source = make(tmp_path / name)
    assert main(["convert", str(source), str(tmp_path / "converted")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(source) in err and said in err, err
    assert not (tmp_path / "converted").exists() and not list(tmp_path.glob(".converted.*"))
    assert main(extract_args([corpus / "v0.mp4"], source, tmp_path / "features")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(source) in err and said in err, err


def test_convert_refuses_heads_that_do_not_divide_the_width(tmp_path, capsys):
    source = FIXTURES / "tiny.full.pt"
    assert main(["convert", str(source), str(tmp_path / "out"), "--num-attention-heads", "7"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(source) in err and "must be a multiple of num_attention_heads (7)" in err


def test_a_device_that_is_not_there_is_one_line(tiny_model_dir, corpus, tmp_path, capsys):
    for device in ("cuda:99", "abacus"):
        assert main(extract_args([corpus / "v0.mp4"], tiny_model_dir, tmp_path / device, "--device", device)) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--device {device}: not usable here" in err, err
        assert not (tmp_path / device).exists()


# ---- the output folder and the manifest (cases 4, 11, 12) --------------------------------------------------------


def test_a_full_disk_is_one_line_leaves_nothing_partial_and_a_rerun_completes(
    tiny_model_dir, corpus, clean_run, tmp_path
):
    mount = tmp_path / "small"
    with small_filesystem(mount, "48k"):
        out = mount / "features"
        args = extract_args([corpus], tiny_model_dir, out, "--keep-seq")  # 4 KiB per window: the disk fills up
        result = run_cli(args)
        assert result.returncode == 1
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and "no space left on the device" in lines[0] and "Traceback" not in result.stderr
        records = assert_consistent(out)
        assert 0 < len(records) < 8  # some were written, whole; none half
        subprocess.run(["mount", "-o", "remount,size=4m", str(mount)], check=True)  # space freed
        result = run_cli(args)
        assert result.returncode == 0, result.stderr
        assert_consistent(out, expected_inputs=8)


def test_a_file_size_limit_fails_only_the_large_outputs_and_leaves_no_partial_file(corpus, tmp_path):
    config = MarlinConfig(**{**TINY_CLIP, "num_frames": 16, "num_hidden_layers": 1, "hidden_size": 256})
    save_marlin_folder(MarlinModel(config), tmp_path / "wide")  # 32 tokens x 256 x 4 bytes: 32 KiB per window
    out = tmp_path / "features"
    args = extract_args([corpus], tmp_path / "wide", out, "--keep-seq")

    def limit():  # 80 kB: outputs of 1 or 2 windows fit, of 3 or 4 do not; the manifest (about 10 kB) does
        resource.setrlimit(resource.RLIMIT_FSIZE, (80_000, 80_000))

    result = run_cli(args, preexec_fn=limit)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "ulimit -f" in line]
    records = assert_consistent(out)
    failed = [r for r in records.values() if r["status"] == "error"]
    assert len(errors) == len(failed) > 0 and all("ulimit -f" in r["error"] for r in failed), result.stderr
    assert 0 < len(records) - len(failed)
    assert run_cli(args).returncode == 0
    assert_consistent(out, expected_inputs=8)


def test_an_output_folder_that_cannot_be_written_is_one_line(tiny_model_dir, corpus, tmp_path, capsys):
    a_file = tmp_path / "features.npy"
    a_file.write_bytes(b"x")
    assert main(extract_args([corpus / "v0.mp4"], tiny_model_dir, a_file)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot make this output folder" in err and a_file.read_bytes() == b"x"
    with small_filesystem(tmp_path / "read_only", "1m", read_only=True) as mount:
        assert main(extract_args([corpus / "v0.mp4"], tiny_model_dir, mount)) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "cannot write in this folder (Read-only file system)" in err, err


def test_garbage_in_the_manifest_is_skipped_and_the_run_completes(tiny_model_dir, corpus, clean_run, tmp_path):
    out = tmp_path / "features"
    assert main(extract_args([corpus / "v0.mp4"], tiny_model_dir, out)) == 0
    good = (out / MANIFEST).read_bytes()
    outside = tmp_path / "outside.npy"
    np.save(outside, np.zeros(1))
    garbage = [
        b"\xff\xfe\x00binary garbage",
        b"null",
        b"[1, 2]",
        b'{"input": [1]}',
        b'{"input": "x", "status": "ok", "output": 5}',
        json.dumps({"input": str(corpus / "v1.mp4"), "status": "ok", "output": "../outside.npy"}).encode(),
        b'{"status": "ok", "output": "v0.npy", "settings": 3, "fingerprint": "zz"}',
    ]
    (out / MANIFEST).write_bytes(good + b"\n".join(garbage) + b"\n")
    assert main(extract_args([corpus], tiny_model_dir, out)) == 0
    records = read_manifest_records(out)
    assert {k: features_by_input(out)[k] for k in records} == clean_run
    assert records[str(corpus / "v1.mp4")]["output"] == "v1.npy"  # done here, not taken from outside the folder


def test_no_video_in_the_inputs_is_one_line_and_an_empty_folder_is_named(tiny_model_dir, corpus, tmp_path, capsys):
    (tmp_path / "x.mp4").mkdir()  # a folder named like a video
    (tmp_path / "empty").mkdir()
    out = tmp_path / "features"
    assert main(extract_args([tmp_path / "x.mp4", tmp_path / "empty"], tiny_model_dir, out)) == 1
    err = capsys.readouterr().err
    assert "no video found" in err and "see " not in err and not (out / MANIFEST).exists()
    assert main(extract_args([tmp_path / "empty", corpus / "v0.mp4"], tiny_model_dir, out)) == 0
    err = capsys.readouterr().err
    assert f"{tmp_path / 'empty'}: folder holds no video files; skipped." in err and "1 done" in err


def test_one_file_spelt_twice_is_extracted_once(tiny_model_dir, corpus, tmp_path, capsys):
    sub = tmp_path / "sub"
    sub.mkdir()
    shutil.copy(corpus / "v0.mp4", sub / "a.mp4")
    (tmp_path / "link.mp4").symlink_to(sub / "a.mp4")
    spellings = [sub / "a.mp4", tmp_path / "sub" / ".." / "sub" / "a.mp4", tmp_path / "link.mp4"]
    out = tmp_path / "features"
    assert main(extract_args(spellings, tiny_model_dir, out)) == 0
    assert "1 done" in capsys.readouterr().err
    assert [r["input"] for r in read_manifest_records(out).values()] == [str(sub / "a.mp4")]


def test_the_longest_file_names_are_extracted(tiny_model_dir, corpus, tmp_path):
    folder_a, folder_b = tmp_path / "a", tmp_path / "b"
    folder_a.mkdir()
    folder_b.mkdir()
    long_stem = "é" * 40 + "x" * (251 - 80)  # 251 bytes: the video's name is 255 bytes, the longest allowed
    for folder in (folder_a, folder_b):  # the same long name twice: the second gets a hashed, shortened name
        shutil.copy(corpus / "v0.mp4", folder / f"{long_stem}.mp4")
    out = tmp_path / "features"
    assert main(extract_args([folder_a, folder_b], tiny_model_dir, out)) == 0
    records = assert_consistent(out, expected_inputs=2)
    assert all(len(r["output"].encode()) <= 255 for r in records.values())


def test_a_fifo_is_not_called_empty(tiny_model_dir, tmp_path, capsys):
    fifo = tmp_path / "stream.mp4"
    os.mkfifo(fifo)
    out = tmp_path / "features"
    assert main(extract_args([fifo], tiny_model_dir, out)) == 1
    err = capsys.readouterr().err
    assert "not a regular file" in err and "file is empty" not in err
    assert read_manifest_records(out)[str(fifo)]["status"] == "error"


@pytest.mark.parametrize("no_face, code", [("centre", 0), ("error", 1)])
def test_tiny_frames_do_not_crash_face_tracking(tiny_model_dir, tmp_path, capsys, no_face, code):
    frames = np.random.default_rng(0).integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)
    video = encode_video(tmp_path / "tiny.mp4", frames)
    out = tmp_path / "features"
    assert main(extract_args([video], tiny_model_dir, out, "--crop-face", "--no-face", no_face)) == code
    record = read_manifest_records(out)[str(video)]
    err = capsys.readouterr().err
    assert "torch.cat" not in err
    if code == 0:
        assert record["status"] == "ok" and record["windows"][0]["face_detected_fraction"] == 0.0
    else:
        assert "no face found in any frame" in record["error"]


# ---- kills at any point (case 4, deliver 7) -------------------------------------------------------------------

# Runs `marlin extract` with one write of the job replaced by one that writes part of its bytes, then SIGKILLs
# the process: a crash in the middle of that very write.
KILL_MID_WRITE = textwrap.dedent(
    """
    import os, signal, sys
    from marlin_transformers.extraction import job

    target, when = sys.argv[1], int(sys.argv[2])
    calls = {"n": 0}
    if target == "manifest":
        real_write = os.write

        def write(descriptor, data):
            calls["n"] += b'"input"' in data  # the manifest's records, not other writes of the process
            if calls["n"] == when and b'"input"' in data:
                real_write(descriptor, data[: len(data) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
            return real_write(descriptor, data)

        job.os.write = write
    else:
        real_fsync = os.fsync

        def fsync(descriptor):
            if os.readlink(f"/proc/self/fd/{descriptor}").endswith(".partial"):
                calls["n"] += 1
                if calls["n"] == when:
                    os.ftruncate(descriptor, os.fstat(descriptor).st_size // 2)
                    os.kill(os.getpid(), signal.SIGKILL)
            return real_fsync(descriptor)

        job.os.fsync = fsync
    from marlin_transformers.cli import main

    sys.exit(main(sys.argv[3:]))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("target, when", [("manifest", 1), ("manifest", 4), ("npy", 1), ("npy", 6)])
def test_a_kill_in_the_middle_of_a_write_loses_nothing(tiny_model_dir, corpus, clean_run, tmp_path, target, when):
    out = tmp_path / "features"
    args = extract_args([corpus], tiny_model_dir, out)
    killed = subprocess.run(
        [sys.executable, "-c", KILL_MID_WRITE, target, str(when), *args], capture_output=True, timeout=300
    )
    assert killed.returncode == -signal.SIGKILL
    if target == "npy":
        assert list(out.glob(".*.partial"))  # the half-written array is there, hidden...
    else:
        assert not (out / MANIFEST).read_bytes().endswith(b"\n")  # ...or the torn record
    assert main(args) == 0
    assert_consistent(out, expected_inputs=8)  # ...and gone, and skipped, after the re-run
    assert features_by_input(out) == clean_run


@pytest.mark.slow
def test_a_pipelined_run_killed_mid_record_resumes_at_once_to_the_same_bytes(
    tiny_model_dir, corpus, clean_run, tmp_path
):
    out = tmp_path / "features"
    args = extract_args([corpus], tiny_model_dir, out, "--num-workers", "2", "--batch-size", "3")
    killed = subprocess.run([sys.executable, "-c", KILL_MID_WRITE, "manifest", "3", *args], capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    assert not (out / MANIFEST).read_bytes().endswith(b"\n")
    # At once: the decoding workers the kill orphaned must not hold the folder's lock.
    assert main(args) == 0
    assert_consistent(out, expected_inputs=8)
    assert features_by_input(out) == clean_run  # the serial run's bytes


@pytest.mark.slow
def test_kills_at_random_points_of_extraction_lose_nothing(tiny_model_dir, corpus, clean_run, tmp_path):
    out = tmp_path / "features"
    args = extract_args([corpus], tiny_model_dir, out)
    command = [sys.executable, "-m", "marlin_transformers.cli", *args]
    rng = random.Random(9)
    for _ in range(3):  # each run is killed somewhere between start-up and the end of the corpus
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(2.0, 8.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
        if (out / MANIFEST).exists():
            read_manifest_records(out)
    result = run_cli(args)
    assert result.returncode == 0, result.stderr
    assert_consistent(out, expected_inputs=8)
    assert features_by_input(out) == clean_run


@pytest.mark.slow
def test_two_runs_started_together_do_each_input_once(tiny_model_dir, corpus, clean_run, tmp_path):
    out = tmp_path / "features"
    command = [sys.executable, "-m", "marlin_transformers.cli", *extract_args([corpus], tiny_model_dir, out)]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    # Whichever comes second is refused in one line while the first holds the folder, or, if the first was already
    # done by then, finds every input done: never is an input done twice.
    for code, err in results:
        if code == 1:
            assert "another marlin extract is writing into this folder" in err and err.count("\n") == 1, err
        else:
            assert code == 0 and ("8 done, 0 already done" in err or "0 done, 8 already done" in err), err
    assert sum("8 done, 0 already done" in err for _, err in results) == 1
    lines = (out / MANIFEST).read_text().splitlines()
    assert len(lines) == 8  # no input twice
    assert features_by_input(out) == clean_run


def test_a_killed_runs_temporary_files_are_removed_by_the_next(tiny_model_dir, corpus, tmp_path):
    out = tmp_path / "features"
    out.mkdir()
    (out / f".3fa1b2c4.{os.getpid()}.partial").write_bytes(b"half")
    assert main(extract_args([corpus / "v0.mp4"], tiny_model_dir, out)) == 0
    assert not list(out.glob(".*.partial"))
    # A killed conversion leaves its hidden staging folder; the next conversion to that folder removes it.
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()  # a process id that no process has now
    stale = tmp_path / f".converted.{gone.pid}.abcd.partial"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    assert main(["convert", str(FIXTURES / "tiny.encoder.pt"), str(tmp_path / "converted")]) == 0
    assert not stale.exists() and (tmp_path / "converted" / "config.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".converted")]
