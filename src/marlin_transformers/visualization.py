"""Every picture the package draws: reconstructions, Fasking masks over face parsing, face crops per window.

Each function takes arrays and returns (or writes) an image; none decodes video, parses faces, draws masks or runs a
model: what computes them (`pretraining.mask_preview`, `pretraining.reconstruction`) hands the arrays over.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .constants import CAPTION_HEIGHT, LAPA_LABEL_NAMES, LAPA_PALETTE, ROW_LABEL_WIDTH, TITLE_HEIGHT
from .modeling_marlin import patchify_video, unpatchify_video


def paint_predictions(
    pixel_values_videos: torch.Tensor,
    logits: torch.Tensor,
    bool_masked_pos: torch.BoolTensor,
    patch_size: int,
    tubelet_size: int,
) -> torch.Tensor:
    """Put predicted tubelets back into a video, for pictures of reconstructions.

    Args:
        pixel_values_videos: (batch, frames, channels, height, width), [0, 1].
        logits: (batch, num_masked, channels * tubelet_size * patch_size**2), from `MarlinForPreTraining`.
        bool_masked_pos: (batch, num_tokens), True where masked.

    Returns:
        The video with every masked tubelet replaced by its prediction, clamped to [0, 1]; same shape as the input.
    """
    b, t, c, h, _ = pixel_values_videos.shape
    patches = patchify_video(pixel_values_videos, patch_size, tubelet_size).clone()
    patches[bool_masked_pos] = logits.reshape(-1, patches.shape[-1]).to(patches.dtype)
    return unpatchify_video(patches, patch_size, tubelet_size, t, h, c).clamp(0, 1)


def reconstruction_grid(
    pixel_values_videos: torch.Tensor,
    logits: torch.Tensor,
    bool_masked_pos: torch.BoolTensor,
    patch_size: int,
    tubelet_size: int,
    num_shown: int = 4,
    max_clips: int = 2,
    clip_titles: list[str] | None = None,
    frame_indices: list[list[int]] | None = None,
    timestamps: list[list[float]] | None = None,
) -> np.ndarray:
    """A labelled picture of reconstructions: per clip a title line, a line naming the frames shown, then the rows
    input / masked (masked tubelets grey; the row label gives the share masked) / reconstruction, labelled on the left.

    Args:
        pixel_values_videos: (batch, frames, 3, height, width) in [0, 1].
        logits: (batch, num_masked, 3 * tubelet_size * patch_size**2) predictions.
        bool_masked_pos: (batch, num_tokens), True where masked.
        num_shown: frames per clip, spread over the clip (first frame of evenly spaced tubelets).
        max_clips: clips shown, from the start of the batch.
        clip_titles: one title per clip shown (default "clip k").
        frame_indices: per clip, each frame's index in its video (default: its position in the clip).
        timestamps: per clip, each frame's time in seconds, said beside its index (default: not said).

    Returns:
        (height, width, 3) uint8 RGB: `ROW_LABEL_WIDTH + num_shown * frame width` wide.
    """
    clips = pixel_values_videos[:max_clips].detach().float().cpu()
    logits = logits[: len(clips)].detach().float().cpu()
    masked = bool_masked_pos[: len(clips)].cpu()
    num_frames, channels, image_size = clips.shape[1], clips.shape[2], clips.shape[3]
    greyed = paint_predictions(clips, torch.full_like(logits, 0.5), masked, patch_size, tubelet_size)
    painted = paint_predictions(clips, logits, masked, patch_size, tubelet_size)
    frames = torch.linspace(0, num_frames // tubelet_size - 1, min(num_shown, num_frames // tubelet_size))
    frames = (frames.round().long() * tubelet_size).tolist()
    width = clips.shape[4]
    parts = []
    for clip in range(len(clips)):
        title = clip_titles[clip] if clip_titles else f"clip {clip}"
        indices = frame_indices[clip] if frame_indices else list(range(num_frames))
        wide = width >= 96  # room for "frame 12, 0.40 s" over each frame; else "frame" once, on the left
        names = [f"{indices[f]}" + (f", {timestamps[clip][f]:.2f} s" if timestamps else "") for f in frames]
        names = [("frame " if wide else "") + name for name in names]
        parts.append(text_strip([title], [ROW_LABEL_WIDTH + len(frames) * width], TITLE_HEIGHT, align="left"))
        cells = [ROW_LABEL_WIDTH] + [width] * len(frames)
        parts.append(text_strip(["" if wide else "frame", *names], cells, CAPTION_HEIGHT))
        labels = ("input", f"masked ({float(masked[clip].float().mean()):.0%})", "reconstruction")
        for label, video in zip(labels, (clips[clip], greyed[clip], painted[clip])):
            row = video[frames].clamp(0, 1).permute(2, 0, 3, 1).reshape(image_size, -1, channels)  # (h, shown * w, c)
            row = (row * 255).round().to(torch.uint8).numpy()
            parts.append(np.concatenate([text_strip([label], [ROW_LABEL_WIDTH], image_size), row], axis=1))
    return np.concatenate(parts, axis=0)


def text_strip(texts: list[str], widths: list[int], height: int, align: str = "center") -> np.ndarray:
    """A white strip with `texts[i]` written in black in its cell of `widths[i]` pixels, vertically centred; the
    font (PIL's default, 14 px) shrinks to fit a narrow cell, down to 8 px.

    Returns:
        (height, sum(widths), 3) uint8 RGB.
    """
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (sum(widths), height), "white")
    draw = ImageDraw.Draw(image)
    left = 0
    for text, width in zip(texts, widths):
        font = fitted_font(text, width - 6, height)
        size = font.getlength(text)
        x = left + 3 if align == "left" else left + max(3, (width - size) / 2)
        draw.text((x, height / 2), text, fill="black", font=font, anchor="lm")
        left += width
    return np.asarray(image)


def fitted_font(text: str, width: int, height: int):
    """PIL's default font at the largest size from 14 px down to 8 px at which `text` fits `width` x `height`."""
    from PIL import ImageFont

    for size in range(min(14, height - 4), 8, -1):
        font = ImageFont.load_default(size=size)
        if font.getlength(text) <= width:
            return font
    return ImageFont.load_default(size=8)


def save_crops_picture(crops: np.ndarray, windows: list[dict], path: str | Path, per_row: int = 8) -> None:
    """A PNG grid: one row per window, every other crop of it, captioned with the window's frames and face rate."""
    from PIL import Image, ImageDraw

    num_windows, frames, side = crops.shape[0], crops.shape[1], crops.shape[2]
    shown = list(range(0, frames, max(1, frames // per_row)))[:per_row]
    thumb, caption = side // 2, 18
    canvas = Image.new("RGB", (thumb * len(shown), (thumb + caption) * num_windows), "white")
    draw = ImageDraw.Draw(canvas)
    for row in range(num_windows):
        top = row * (thumb + caption)
        window = windows[row]
        fraction = window.get("face_detected_fraction")
        text = f"window {row}: frames {window['frame_indices'][0]}-{window['frame_indices'][-1]}"
        if fraction is not None:
            text += f", face detected in {fraction:.0%} of frames"
        draw.text((4, top + 3), text, fill="black")
        for column, index in enumerate(shown):
            image = Image.fromarray(crops[row, index]).resize((thumb, thumb), Image.BILINEAR)
            canvas.paste(image, (column * thumb, top + caption))
    canvas.save(path)


def render_mask_overlay(
    frames: torch.Tensor | np.ndarray,
    label_maps: torch.Tensor | np.ndarray,
    bool_masked_pos: torch.Tensor,
    path: str | Path,
    patch_size: int = 16,
    tubelet_size: int = 2,
    num_shown: int = 4,
    title: str | None = None,
    frame_indices: list[int] | None = None,
):
    """Write a PNG of a few frames: the frame, its parsing overlaid in colour, and the frame with masked tokens greyed.

    Columns are `num_shown` tubelets spread over the clip, each shown by its first frame (the one whose parsing
    decides Fasking) and named above; rows are input / face parsing / masked (with the share masked), named on the
    left; then a colour legend.

    Args:
        frames: `(num_frames, height, width, 3)` uint8 RGB face crops.
        label_maps: `(num_frames, height, width)` LaPa labels 0..10.
        bool_masked_pos: `(num_tokens,)` bool, True where masked, tokens ordered (time, row, column).
        path: the PNG to write.
        title: a line above the picture (default: none).
        frame_indices: each frame's index in its video, to name the columns (default: its position in the clip).

    Returns:
        The picture, a `PIL.Image.Image` of width `ROW_LABEL_WIDTH + num_shown * width`.
    """
    from PIL import Image, ImageDraw, ImageFont

    frames = torch.as_tensor(np.asarray(frames)).to(torch.uint8)
    label_maps = torch.as_tensor(np.asarray(label_maps)).long()
    num_frames, height, width = frames.shape[:3]
    grid_t, grid_h, grid_w = num_frames // tubelet_size, height // patch_size, width // patch_size
    masked = torch.as_tensor(bool_masked_pos).bool().reshape(grid_t, grid_h, grid_w)
    # (t, h, w) pixel mask: each token covers a patch_size x patch_size square.
    masked_pixels = masked.repeat_interleave(patch_size, dim=1).repeat_interleave(patch_size, dim=2)

    shown = torch.linspace(0, grid_t - 1, min(num_shown, grid_t)).round().long().unique()
    rows = []
    for tubelet in shown.tolist():
        frame = frames[tubelet * tubelet_size].float()  # (h, w, 3)
        parsing = colour_parsing(frame, label_maps[tubelet * tubelet_size])
        greyed = torch.where(masked_pixels[tubelet, ..., None], 0.15 * frame + 0.85 * 128, frame)
        rows.append(torch.cat([frame, parsing, greyed], dim=0))  # (3 h, w, 3)
    grid = torch.cat(rows, dim=1).round().clamp(0, 255).to(torch.uint8).numpy()  # (3 h, shown * w, 3)
    row_names = ("input", "face parsing", f"masked ({float(masked.float().mean()):.0%})")
    labels = np.concatenate([text_strip([name], [ROW_LABEL_WIDTH], height) for name in row_names], axis=0)
    grid = np.concatenate([labels, grid], axis=1)
    indices = frame_indices or list(range(num_frames))
    names = ["", *(f"frame {indices[tubelet * tubelet_size]}" for tubelet in shown.tolist())]
    strips = [text_strip(names, [ROW_LABEL_WIDTH] + [width] * len(shown), CAPTION_HEIGHT)]
    if title:
        strips.insert(0, text_strip([title], [grid.shape[1]], TITLE_HEIGHT, align="left"))
    grid = np.concatenate([*strips, grid], axis=0)

    entries = [(name, colour) for name, colour in zip(LAPA_LABEL_NAMES, LAPA_PALETTE)] + [("masked", (128,) * 3)]
    entry_width = 96
    per_row = max(1, grid.shape[1] // entry_width)
    line_height = 16
    legend_height = math.ceil(len(entries) / per_row) * line_height + 4
    picture = Image.new("RGB", (grid.shape[1], grid.shape[0] + legend_height), (255, 255, 255))
    picture.paste(Image.fromarray(grid), (0, 0))
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default()
    for i, (name, colour) in enumerate(entries):
        x = (i % per_row) * entry_width + 4
        y = grid.shape[0] + (i // per_row) * line_height + 4
        draw.rectangle([x, y, x + 10, y + 10], fill=colour, outline=(0, 0, 0))
        draw.text((x + 14, y), name, fill=(0, 0, 0), font=font)
    picture.save(path)
    return picture


def colour_parsing(frames: torch.Tensor, label_maps: torch.Tensor) -> torch.Tensor:
    """Frames with their face parsing blended in (40% frame, 60% the label's `LAPA_PALETTE` colour; background kept).

    Args:
        frames: `(..., height, width, 3)` float RGB in [0, 255].
        label_maps: `(..., height, width)` LaPa labels 0..10.

    Returns:
        `(..., height, width, 3)` float RGB in [0, 255].
    """
    label_maps = torch.as_tensor(label_maps).long()
    colours = torch.tensor(LAPA_PALETTE, dtype=torch.float32)[label_maps]
    return torch.where(label_maps[..., None] > 0, 0.4 * frames + 0.6 * colours, frames)


def curve_figure(points: list[tuple[int, float]], title: str, xlabel: str = "optimizer step", ylabel: str = "value"):
    """A matplotlib line plot of (step, value) points: whole steps on the x axis, values written with as many
    decimals as their ticks need (no offset, no two ticks alike).

    Returns:
        The `matplotlib.figure.Figure` (drawn by Agg, no pyplot: nothing global is touched).
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(6.4, 4.0), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    steps, values = zip(*points)
    axes.plot(steps, values, color="tab:red", marker="o", markersize=3)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.ticklabel_format(axis="y", style="plain", useOffset=False)
    axes.set(title=title, xlabel=xlabel, ylabel=ylabel)
    axes.grid(alpha=0.3)
    return figure


def write_curve_png(points: list[tuple[int, float]], path: Path, title: str, xlabel: str, ylabel: str) -> None:
    """`curve_figure` written as a PNG (needs matplotlib, the `train` extra)."""
    curve_figure(points, title, xlabel, ylabel).savefig(path)


def reconstruction_panels(
    original: torch.Tensor,
    masked: torch.Tensor,
    reconstruction: torch.Tensor,
    label_maps: torch.Tensor,
    bool_masked_pos: torch.Tensor,
    patch_size: int,
    tubelet_size: int,
) -> np.ndarray:
    """One window's frames as four panels side by side: frames | masked input | reconstruction | Fasking parts.

    The parts panel blends the face parsing into the frame (`colour_parsing`) and darkens the masked tubelets, so the
    parts Fasking hides first show at a glance.

    Args:
        original: `(num_frames, 3, size, size)` in [0, 1] (`pretraining.reconstruction`).
        masked: likewise, the masked input.
        reconstruction: likewise, the reconstruction.
        label_maps: `(num_frames, size, size)` LaPa labels 0..10.
        bool_masked_pos: `(num_tokens,)` bool, True where masked, tokens in (time, row, column) order.

    Returns:
        `(num_frames, size, 4 * size, 3)` uint8 RGB.
    """
    num_frames, _, height, width = original.shape
    grid = (num_frames // tubelet_size, height // patch_size, width // patch_size)
    hidden = bool_masked_pos.reshape(grid).repeat_interleave(tubelet_size, 0)  # (t, h / p, w / p)
    hidden = hidden.repeat_interleave(patch_size, 1).repeat_interleave(patch_size, 2)  # (t, h, w)
    frames = original.permute(0, 2, 3, 1).float() * 255  # (t, h, w, 3)
    parts = colour_parsing(frames, label_maps)
    parts = torch.where(hidden[..., None], 0.55 * parts, parts)
    panels = [video.permute(0, 2, 3, 1).float() * 255 for video in (original, masked, reconstruction)] + [parts]
    return torch.cat(panels, dim=2).round().clamp(0, 255).to(torch.uint8).numpy()


def labelled_panels(reconstruction, patch_size: int, tubelet_size: int) -> np.ndarray:
    """One window's `reconstruction_panels`, each frame with the panels' titles above it and, below, the window
    (its number, frames and time span) and the frame (its index in the video and time).

    Args:
        reconstruction: a `pretraining.reconstruction.WindowReconstruction` (its window's `frame_indices`,
            `timestamps`, `start_time`, `end_time` and `index` are said).

    Returns:
        `(num_frames, TITLE_HEIGHT + size + CAPTION_HEIGHT, 4 * size, 3)` uint8 RGB.
    """
    r, window = reconstruction, reconstruction.window
    panels = reconstruction_panels(
        r.original, r.masked, r.reconstruction, r.label_maps, r.bool_masked_pos, patch_size, tubelet_size
    )
    width = panels.shape[2] // 4
    ratio = float(r.bool_masked_pos.float().mean())
    titles = ["input", f"masked ({ratio:.0%})", "reconstruction", "face parts, masked darker"]
    header = text_strip(titles, [width] * 4, TITLE_HEIGHT)
    span = window_title(window)
    labelled = []
    for frame, index, time in zip(panels, window.frame_indices, window.timestamps):
        shown = f"shown: frame {index}, {time:.2f} s"
        footer = text_strip([span, shown], [2 * width, 2 * width], CAPTION_HEIGHT, align="left")
        labelled.append(np.concatenate([header, frame, footer], axis=0))
    return np.stack(labelled)


def window_title(window) -> str:
    """The title of a `video.windows.VideoWindow`: "window 2: frames 64-94, 2.13-3.17 s" (time span in seconds)."""
    first, last = window.frame_indices[0], window.frame_indices[-1]
    return f"window {window.index}: frames {first}-{last}, {window.start_time:.2f}-{window.end_time:.2f} s"


def write_reconstruction_video(
    windows,
    path: str | Path,
    fps: float,
    patch_size: int,
    tubelet_size: int,
    grid_windows: int = 8,
    grid_frames: int = 4,
) -> list:
    """Write the side-by-side video of every window (`labelled_panels`, window after window) and, beside it (same
    name, `.png`), the picture of `reconstruction_grid` for the first `grid_windows` windows.

    Args:
        windows: `pretraining.reconstruction.WindowReconstruction`s, or anything with their attributes; an
            iterator is drawn as it comes (the video is written streaming).
        path: the video to write (H.264, written whole or not at all, `video.writing.write_video`).
        fps: frames per second of the video (the sampled frames' rate plays them at their real speed).

    Returns:
        The windows, in a list (their tensors kept: about 30 MB per window at 224 pixels).
    """
    from PIL import Image

    from .video.writing import write_video

    path = Path(path)
    kept = []

    def frames():
        for window in windows:
            kept.append(window)
            yield from labelled_panels(window, patch_size, tubelet_size)

    write_video(path, frames(), fps)
    shown = kept[:grid_windows]
    if shown:
        grid = reconstruction_grid(
            torch.stack([w.original for w in shown]),
            torch.stack([w.logits for w in shown]),
            torch.stack([w.bool_masked_pos for w in shown]),
            patch_size,
            tubelet_size,
            num_shown=grid_frames,
            max_clips=len(shown),
            clip_titles=[window_title(w.window) for w in shown],
            frame_indices=[w.window.frame_indices for w in shown],
            timestamps=[w.window.timestamps for w in shown],
        )
        Image.fromarray(grid).save(path.with_suffix(".png"))
    return kept


def draw_face_boxes(frames: np.ndarray, boxes: np.ndarray, detected: np.ndarray | None = None) -> np.ndarray:
    """Frames with the tracked face's box drawn: green where the face was detected, orange where interpolated.

    Args:
        frames: `(num_frames, height, width, 3)` uint8 RGB.
        boxes: `(num_frames, 4)` (x1, y1, x2, y2) frame pixels.
        detected: `(num_frames,)` bool (default: all True).

    Returns:
        `(num_frames, height, width, 3)` uint8 RGB, a copy.
    """
    from PIL import Image, ImageDraw

    detected = np.ones(len(frames), dtype=bool) if detected is None else detected
    width = max(2, round(max(frames.shape[1:3]) / 160))  # visible on big frames, not a blot on small ones
    drawn = []
    for frame, box, found in zip(frames, boxes, detected):
        image = Image.fromarray(frame)
        ImageDraw.Draw(image).rectangle(
            [float(v) for v in box], outline=(0, 220, 0) if found else (255, 150, 0), width=width
        )
        drawn.append(np.asarray(image))
    return np.stack(drawn)


def save_similarity_picture(features: np.ndarray, path: str | Path, cell: int = 48) -> np.ndarray:
    """A heat map of the cosine similarity between windows' features, with its values written in each cell.

    Args:
        features: `(num_windows, hidden_size)` pooled features.
        path: the PNG to write.
        cell: side of one window's cell, pixels.

    Returns:
        `(num_windows, num_windows)` float32 cosine similarities in [-1, 1].
    """
    from PIL import Image, ImageDraw

    features = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    unit = torch.nn.functional.normalize(features, dim=1)
    similarity = (unit @ unit.T).clamp(-1, 1).numpy()
    count, margin = len(similarity), 64
    side = margin + cell * count
    image = Image.new("RGB", (max(side + 8, 240), side + 24), "white")  # wide enough for the title
    draw = ImageDraw.Draw(image)
    draw.text(
        (4, side + 6), "cosine similarity of window features", fill="black"
    )  # under the map: app labels sit on top
    for row in range(count):
        draw.text((4, margin + row * cell + cell // 2 - 5), f"window {row}", fill="black")
        draw.text((margin + row * cell + 4, margin - 16), f"w{row}", fill="black")
        for column in range(count):
            value = float(similarity[row, column])
            # White at 0, red toward +1, blue toward -1.
            strength = round(255 * (1 - abs(value)))
            colour = (255, strength, strength) if value >= 0 else (strength, strength, 255)
            x, y = margin + column * cell, margin + row * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=colour, outline=(200, 200, 200))
            draw.text((x + 6, y + cell // 2 - 5), f"{value:.2f}", fill="black")
    image.save(path)
    return similarity
