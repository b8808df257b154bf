import numpy as np
import pytest

from marlin_transformers.exceptions import VideoError
from marlin_transformers.video import iter_windows, plan_windows, read_video
from marlin_transformers.video import windows as video_windows
from video_factory import encode_video, indexed_frames, read_frame_index, write_audio_only

# Start frames of the windows marlin-pytorch 0.3.4's `Marlin._load_video(path, sample_rate=2, stride=16)` yields,
# measured by running it (with `ffmpeg.probe` answering the true frame count) on `indexed_frames` videos.
# Each window is its start + 0, 2, ..., 30. It drops the last window when (frames - 32) divides by 32 (64, 96).
REFERENCE_STARTS = {40: [0], 64: [0], 96: [0, 32], 143: [0, 32, 64, 96], 200: [0, 32, 64, 96, 128, 160]}


def decoded_indices(window) -> list[int]:
    return [read_frame_index(frame) for frame in window.frames]


@pytest.mark.parametrize("num_decoded", sorted(REFERENCE_STARTS))
def test_first_windows_equal_reference(num_decoded):
    windows = plan_windows([0.0] * num_decoded)
    reference = [list(range(start, start + 31, 2)) for start in REFERENCE_STARTS[num_decoded]]
    assert [indices for indices, _ in windows[: len(reference)]] == reference


def test_143_frames_streamed_like_reference_then_tail(tmp_path):
    path = encode_video(tmp_path / "v143.mp4", indexed_frames(143))
    windows = list(iter_windows(path))
    assert [w.frame_indices for w in windows] == [list(range(s, s + 31, 2)) for s in (0, 32, 64, 96, 112)]
    # The frames really are the decoded frames those indices name.
    assert all(decoded_indices(w) == w.frame_indices for w in windows)
    assert [w.index for w in windows] == [0, 1, 2, 3, 4]
    assert all(w.num_padded == 0 and w.frames.shape == (16, 48, 64, 3) for w in windows)
    assert windows[1].start_time == pytest.approx(32 / 30)
    assert windows[1].end_time == pytest.approx(63 / 30)  # frame 62 is shown until 63 / 30 s
    assert windows[-1].end_time == pytest.approx(143 / 30)


def test_unstacked_windows_hold_the_decoded_frames_themselves(tmp_path):
    path = encode_video(tmp_path / "v71.mp4", indexed_frames(71))
    stacked, unstacked = list(iter_windows(path)), list(iter_windows(path, stack=False))
    assert [w.frame_indices for w in unstacked] == [w.frame_indices for w in stacked]
    for window, reference in zip(unstacked, stacked):
        assert isinstance(window.frames, list) and len(window.frames) == 16
        np.testing.assert_array_equal(np.stack(window.frames), reference.frames)
    # Overlapping windows (the tail, frames 40-70, and the window of 32-62) share the frames they both use.
    shared = set(unstacked[1].frame_indices) & set(unstacked[2].frame_indices)
    assert shared
    for index in shared:
        first = unstacked[1].frames[unstacked[1].frame_indices.index(index)]
        assert first is unstacked[2].frames[unstacked[2].frame_indices.index(index)]


@pytest.mark.parametrize("num_decoded", [31, 33, 62, 63, 64, 94, 95, 96, 97, 143, 300])
def test_windows_cover_the_tail_once(num_decoded):
    windows = [indices for indices, _ in plan_windows([0.0] * num_decoded)]
    assert windows[-1][-1] == num_decoded - 1
    assert all(len(w) == 16 and np.all(np.diff(w) == 2) for w in windows)
    assert len({tuple(w) for w in windows}) == len(windows)
    # Only the last window may break the regular spacing of starts.
    assert [w[0] for w in windows[:-1]] == list(range(0, 32 * (len(windows) - 1), 32))


@pytest.mark.parametrize(
    ("num_decoded", "expected"),
    [(1, [0] * 16), (15, [0, 2, 4, 6, 8, 10, 12, 14] + [14] * 8), (27, list(range(0, 27, 2)) + [26, 26])],
)
def test_short_video_gives_one_padded_window(tmp_path, num_decoded, expected):
    path = encode_video(tmp_path / f"short{num_decoded}.mkv", indexed_frames(num_decoded))
    (window,) = list(iter_windows(path))
    assert window.frame_indices == expected
    assert decoded_indices(window) == expected
    assert window.num_padded == expected.count(expected[-1]) - 1
    assert window.frames.shape == (16, 48, 64, 3)
    assert window.start_time == 0.0
    assert window.end_time == pytest.approx((expected[-1] + 1) / 30, abs=1e-3)  # Matroska counts in ms


def test_overlapping_windows_with_smaller_stride():
    windows = [indices for indices, _ in plan_windows([0.0] * 50, stride=8)]
    assert [w[0] for w in windows] == [0, 16, 19]


def test_stride_in_seconds_follows_time_not_frames():
    # 10 fps for 3 s, then 40 fps for 3 s: a 1 s stride is 10 frames, then 40 frames.
    times = [i / 10 for i in range(30)] + [3 + i / 40 for i in range(120)]
    windows = [indices for indices, _ in plan_windows(times, stride_seconds=1.0)]
    starts = [w[0] for w in windows]
    assert starts == [0, 10, 20, 30, 70, 110, 119]  # 119..149 is the tail window
    assert [times[s] for s in starts[:-1]] == pytest.approx([0, 1, 2, 3, 4, 5])


def test_variable_frame_rate_timestamps(tmp_path):
    gaps = [0.02, 0.05] * 20
    times = np.concatenate([[0.0], np.cumsum(gaps)])[:40]
    path = encode_video(tmp_path / "vfr.mkv", indexed_frames(40), timestamps=times)
    frames, decoded_times = read_video(path)
    assert len(frames) == 40
    np.testing.assert_allclose(decoded_times, times, atol=1e-3)
    (first, tail) = list(iter_windows(path))
    np.testing.assert_allclose(first.timestamps, times[0:31:2], atol=1e-3)
    assert tail.frame_indices[-1] == 39
    assert tail.start_time == pytest.approx(times[9], abs=1e-3)


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_metadata_is_applied(tmp_path, rotation):
    stored = indexed_frames(20, 48, 64)
    path = encode_video(tmp_path / f"rot{rotation}.mp4", stored, rotation=rotation)
    frames, _ = read_video(path)
    assert frames.shape == ((20, 64, 48, 3) if rotation % 180 else (20, 48, 64, 3))
    # Turning the frames back (clockwise by `rotation`) gives the stored pictures.
    upright = np.rot90(frames, k=-rotation // 90, axes=(1, 2))
    assert [read_frame_index(f) for f in upright] == list(range(20))


@pytest.mark.parametrize("name", ["v.mkv", "v.webm", "v.avi", "v.mov"])
def test_containers(tmp_path, name):
    path = encode_video(tmp_path / name, indexed_frames(35))
    windows = list(iter_windows(path))
    assert [w.frame_indices[0] for w in windows] == [0, 4]
    assert all(decoded_indices(w) == w.frame_indices for w in windows)


def test_audio_track_is_ignored(tmp_path):
    path = encode_video(tmp_path / "av.mp4", indexed_frames(33), with_audio=True)
    assert [w.frame_indices[0] for w in iter_windows(path)] == [0, 2]


@pytest.mark.parametrize(("height", "width"), [(49, 67), (9, 64), (301, 65)])
def test_odd_sizes(tmp_path, height, width):
    frames = indexed_frames(5, height, width)
    path = encode_video(tmp_path / "odd.mkv", frames, pix_fmt="yuv444p")
    (window,) = list(iter_windows(path))
    assert window.frames.shape == (16, height, width, 3)
    assert decoded_indices(window) == window.frame_indices


def test_streaming_decodes_lazily_and_converts_only_used_frames(tmp_path, monkeypatch):
    path = encode_video(tmp_path / "long.mp4", indexed_frames(143))
    decoded, converted = [], []
    real_iter_frames, real_to_rgb = video_windows.iter_frames, video_windows.frame_to_rgb

    def counting_iter_frames(*args):
        for item in real_iter_frames(*args):
            decoded.append(item[0])
            yield item

    def counting_to_rgb(frame):
        converted.append(frame.pts)
        return real_to_rgb(frame)

    monkeypatch.setattr(video_windows, "iter_frames", counting_iter_frames)
    monkeypatch.setattr(video_windows, "frame_to_rgb", counting_to_rgb)
    windows = iter_windows(path)
    next(windows)
    assert len(decoded) == 31  # the first window is out before frame 31 is decoded
    list(windows)
    assert len(decoded) == 143
    # 4 regular windows use 64 frames; the tail (112..142) adds only 128..142 (8 frames): never all 143.
    assert len(converted) == 72 == len(set(converted))


def test_truncated_matroska_raises_unless_not_strict(tmp_path):
    path = encode_video(tmp_path / "full.mkv", indexed_frames(60))
    data = open(path, "rb").read()
    truncated = tmp_path / "truncated.mkv"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError, match="truncated"):
        list(iter_windows(truncated))
    windows = list(iter_windows(truncated, strict=False))
    assert windows and windows[-1].frame_indices[-1] < 59


def _bad_inputs(tmp_path):
    mp4 = open(encode_video(tmp_path / "good.mp4", indexed_frames(60)), "rb").read()
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "notes.mp4").write_text("not a video\n" * 20)
    (tmp_path / "noise.mkv").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (tmp_path / "truncated.mp4").write_bytes(mp4[: len(mp4) // 2])
    write_audio_only(tmp_path / "audio.mp4")
    (tmp_path / "folder.mp4").mkdir()
    return {
        "missing.mp4": "not found",
        "empty.mp4": "empty",
        "notes.mp4": "cannot be opened",
        "noise.mkv": "cannot be opened",
        "truncated.mp4": "truncated",
        "audio.mp4": "no video stream",
        "folder.mp4": "folder",
    }


def test_bad_inputs_raise_one_line_video_errors(tmp_path):
    for name, words in _bad_inputs(tmp_path).items():
        with pytest.raises(VideoError) as info:
            list(iter_windows(tmp_path / name))
        message = str(info.value)
        assert "\n" not in message
        assert str(tmp_path / name) in message and words in message, message


def test_invalid_window_arguments():
    with pytest.raises(ValueError):
        plan_windows([0.0], sample_rate=0)
    with pytest.raises(ValueError):
        plan_windows([0.0], stride_seconds=0)


def test_memory_does_not_grow_with_video_length(tmp_path):
    import tracemalloc

    path = encode_video(tmp_path / "long.mkv", indexed_frames(600, 96, 128))
    frame_bytes = 96 * 128 * 3
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_windows(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 19
    # A window span of RGB frames (31) plus the window being built (16) and change, far from all 600 frames.
    assert peak < 60 * frame_bytes, peak / frame_bytes


def test_frame_folders_are_read_in_time_order(tmp_path):
    from PIL import Image

    from marlin_transformers.data.youtube_faces import youtube_faces_clips
    from marlin_transformers.video.decoding import decode_frames

    # YouTube Faces names frames `0.<n>.jpg`: as strings, 0.1000 sorts before 0.555 (the reference's order).
    numbers = [99, 100, 555, 1000]
    clip = tmp_path / "crop_images_DB" / "Person" / "0"
    clip.mkdir(parents=True)
    for index, number in enumerate(numbers):
        Image.fromarray(indexed_frames(index + 1, 48, 64)[-1]).save(clip / f"0.{number}.png")
    (tmp_path / "train_set.csv").write_text("path,len\nPerson/0,4\n")
    (folder,) = youtube_faces_clips(tmp_path, "train")
    frames = decode_frames(folder, range(4))
    assert [read_frame_index(frame) for frame in frames] == [0, 1, 2, 3]  # 0.99, 0.100, 0.555, 0.1000


def _rgb_in_forked_child(frames, queue) -> None:
    from marlin_transformers.video.decoding import frame_to_rgb

    queue.put([frame_to_rgb(frame) for frame in frames])


def test_frames_convert_to_rgb_as_pyav_does_on_one_thread_and_in_forked_children(tmp_path):
    import multiprocessing

    import av

    from marlin_transformers.video.decoding import frame_to_rgb

    videos = [
        encode_video(tmp_path / "a.mp4", indexed_frames(6)),  # yuv420p, 64 x 48
        encode_video(tmp_path / "b.mkv", indexed_frames(6, 49, 67), pix_fmt="yuv444p"),
        encode_video(tmp_path / "c.mp4", indexed_frames(6, 120, 160), lossless=False),
    ]
    frames = []
    for path in videos:
        with av.open(str(path)) as container:
            frames += list(container.decode(video=0))
    mixed = frames[::2] + frames[1::2]  # sizes and pixel formats alternate
    expected = [frame.to_ndarray(format="rgb24") for frame in mixed]  # PyAV's own, its threads
    converted = [frame_to_rgb(frame) for frame in mixed]
    assert all(np.array_equal(a, b) for a, b in zip(converted, expected))

    # A data loader worker is forked from a process that has converted frames already: it must convert too (a
    # converter kept with its thread pool once hung such a worker).
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_rgb_in_forked_child, args=(mixed[:6], queue))
    child.start()
    try:
        from_child = queue.get(timeout=60)
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
    assert all(np.array_equal(a, b) for a, b in zip(from_child, expected[:6]))


def test_one_thread_conversion_asks_for_threads_only_where_pyav_has_them(monkeypatch):
    import av

    from marlin_transformers.video.decoding import one_thread_reformat

    try:
        for version, options in (("18.1.0", {"threads": 1}), ("17.0.0", {"threads": 1}), ("16.1.0", {})):
            monkeypatch.setattr(av, "__version__", version)
            one_thread_reformat.cache_clear()
            assert one_thread_reformat() == options
    finally:
        monkeypatch.undo()
        one_thread_reformat.cache_clear()
    assert one_thread_reformat() == ({"threads": 1} if int(av.__version__.split(".")[0]) >= 17 else {})
