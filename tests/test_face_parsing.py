import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from marlin_transformers.constants import CAPTION_HEIGHT, LAPA_PALETTE, ROW_LABEL_WIDTH, TITLE_HEIGHT
from marlin_transformers.exceptions import CheckpointError
from marlin_transformers.pretraining.face_parsing import FarlFaceParser, LandmarkFaceParser
from marlin_transformers.pretraining.mask_preview import render_fasking_preview
from marlin_transformers.pretraining.masking import generate_mask
from marlin_transformers.visualization import render_mask_overlay

# Five MTCNN landmarks (x, y) of a frontal face in a 224-pixel crop: eyes, nose tip, mouth corners.
LANDMARKS = torch.tensor([[80.0, 100.0], [144.0, 100.0], [112.0, 135.0], [86.0, 165.0], [138.0, 165.0]])


def rotate(points: torch.Tensor, degrees: float, center=(112.0, 112.0)) -> torch.Tensor:
    angle = math.radians(degrees)
    rotation = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    center = torch.tensor(center)
    return (points - center) @ rotation.T + center


def label_at(labels: torch.Tensor, point: torch.Tensor) -> int:
    x, y = point.round().long().tolist()
    return int(labels[y, x])


def blank_crops(batch_size: int) -> torch.Tensor:
    return torch.zeros(batch_size, 224, 224, 3, dtype=torch.uint8)


@pytest.mark.parametrize("degrees", [0.0, 25.0, -40.0])
def test_landmark_parser_puts_parts_on_the_landmarks(degrees):
    landmarks = rotate(LANDMARKS, degrees)
    labels = LandmarkFaceParser()(blank_crops(1), landmarks[None])[0]
    assert labels.shape == (224, 224) and labels.dtype == torch.uint8
    left_eye, right_eye, nose, left_mouth, right_mouth = landmarks
    down = rotate(torch.tensor([[0.0, 1.0]]), degrees, center=(0.0, 0.0))[0]
    assert label_at(labels, left_eye) == 4  # the eye on the image left is the subject's right eye
    assert label_at(labels, right_eye) == 5
    assert label_at(labels, left_eye - 19 * down) == 2  # brows above the eyes
    assert label_at(labels, right_eye - 19 * down) == 3
    assert label_at(labels, nose) == 6
    mouth = (left_mouth + right_mouth) / 2
    assert label_at(labels, mouth) == 8
    assert label_at(labels, mouth - 6 * down) == 7
    assert label_at(labels, mouth + 6 * down) == 9
    assert label_at(labels, left_mouth) in (7, 8, 9) and label_at(labels, right_mouth) in (7, 8, 9)
    assert label_at(labels, (left_eye + left_mouth) / 2 - 8 * (right_eye - left_eye) / 64) == 1  # cheek: skin
    assert label_at(labels, torch.tensor([3.0, 220.0])) == 0  # corner: background
    assert label_at(labels, (left_eye + right_eye) / 2 - 75 * down) == 10  # above the forehead: hair
    assert set(labels.unique().tolist()) == set(range(11))


def test_landmark_parser_without_face_and_with_boxes():
    landmarks = torch.stack([LANDMARKS, torch.full((5, 2), float("nan")), LANDMARKS])
    boxes = torch.tensor([[float("nan")] * 4, [0.0, 0.0, 0.0, 0.0], [60.0, 60.0, 164.0, 200.0]])
    labels = LandmarkFaceParser()(blank_crops(3), landmarks, boxes)
    assert labels.shape == (3, 224, 224)
    assert (labels[1] == 0).all()  # no face: all background
    assert torch.equal(labels[0], LandmarkFaceParser()(blank_crops(1), LANDMARKS[None])[0])  # NaN box: ignored
    # With a box, the skin oval is the ellipse inscribed in it.
    assert labels[2, 130, 62] == 1 and labels[2, 130, 56] != 1
    assert labels[2, 196, 112] == 1 and labels[2, 204, 112] != 1
    assert labels[0, 130, 56] == 1  # without a box the oval is wider


def test_landmark_parser_labels_drive_fasking():
    # Parts drawn by the parser are masked first: at 0.75 no eye, nose or mouth token stays visible.
    labels = LandmarkFaceParser()(blank_crops(16), LANDMARKS.expand(16, 5, 2))
    mask = generate_mask("fasking", 16, 224, 16, 2, 0.75, 0, label_maps=labels).view(8, 14, 14)
    for x, y in LANDMARKS.tolist():
        assert mask[:, int(y) // 16, int(x) // 16].all()


class TinyFarl(nn.Module):
    """Same signature as FaRL's LaPa TorchScript model: (b, 3, 448, 448) in [0, 1] -> ((b, 11, 448, 448) logits, _).

    Its label is the red channel read as a level: round(red * 10.2), so crops can carry their own labels.
    """

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        levels = torch.arange(11, dtype=images.dtype, device=images.device).view(1, 11, 1, 1)
        return -((images[:, :1] * 10.2 - levels) ** 2), images.mean(dim=1)


@pytest.fixture(scope="module")
def tiny_farl_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("farl") / "tiny_farl.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, but FaRL ships as TorchScript
        torch.jit.script(TinyFarl()).save(str(path))
    return path


def checkerboard_labels() -> torch.Tensor:
    """(224, 224) labels 0..10 in 32-pixel blocks."""
    blocks = (torch.arange(7)[:, None] * 7 + torch.arange(7)[None, :]) % 11
    return blocks.repeat_interleave(32, dim=0).repeat_interleave(32, dim=1)


def test_farl_parser_round_trip(tiny_farl_path):
    labels = checkerboard_labels()
    crops = blank_crops(3)
    crops[..., 0] = (labels * 25).to(torch.uint8)  # red = label / 10.2
    landmarks = torch.stack([LANDMARKS, torch.full((5, 2), float("nan")), rotate(LANDMARKS, 20.0)])
    parsed = FarlFaceParser(tiny_farl_path, batch_size=1)(crops, landmarks)
    assert parsed.shape == (3, 224, 224) and parsed.dtype == torch.uint8
    assert (parsed[1] == 0).all()  # no landmarks: no face
    # Warping to 448, parsing and warping back returns each crop's labels, but for a pixel or two at block edges.
    block_interiors = torch.zeros(224, 224, dtype=torch.bool)
    for i in range(7):
        for j in range(7):
            block_interiors[32 * i + 4 : 32 * (i + 1) - 4, 32 * j + 4 : 32 * (j + 1) - 4] = True
    for face in (0, 2):
        agreement = parsed[face].long() == labels
        assert agreement[block_interiors].all()
        assert agreement.float().mean() > 0.9


def test_farl_parser_aligns_landmarks_to_the_template(tiny_farl_path):
    parser = FarlFaceParser(tiny_farl_path)
    template = torch.tensor([[196.0, 226.0], [316.0, 226.0], [256.0, 286.0], [220.0, 360.4], [292.0, 360.4]])
    # Landmarks in the template's proportions, so the similarity transform fits them exactly.
    landmarks = (template - torch.tensor([256.0, 226.0])) * (64 / 120) + torch.tensor([112.0, 100.0])
    ys, xs = torch.meshgrid(torch.arange(448.0), torch.arange(448.0), indexing="ij")
    for point, expected in zip(landmarks, (template / 256) * 447 / 2):
        x, y = point.round().long().tolist()
        crops = blank_crops(1)
        crops[0, y - 1 : y + 2, x - 1 : x + 2, 1] = 255
        images, inverse_grid = parser.align(crops, landmarks[None])
        assert images.shape == (1, 3, 448, 448) and inverse_grid.shape == (1, 224, 224, 2)
        assert 0.9 < images.max() <= 1.0
        green = images[0, 1] / images[0, 1].sum()
        centroid = torch.stack([(green * xs).sum(), (green * ys).sum()])
        assert (centroid - expected).abs().max() < 1.5, (centroid, expected)


def test_farl_parser_channel_order(tiny_farl_path):
    crops = blank_crops(1)
    crops[..., 0] = 100  # red only: level 4 in RGB order, 0 when the model is fed BGR as the reference did
    # The outermost pixels blend with grid_sample's zero padding, as in the reference; look inside.
    assert (FarlFaceParser(tiny_farl_path)(crops, LANDMARKS[None])[:, 4:-4, 4:-4] == 4).all()
    assert (FarlFaceParser(tiny_farl_path, channel_order="bgr")(crops, LANDMARKS[None]) == 0).all()


def test_farl_parser_rejects_missing_or_wrong_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        FarlFaceParser(tmp_path / "missing.pt")
    not_a_model = tmp_path / "not_a_model.pt"
    not_a_model.write_bytes(b"not a TorchScript archive")
    with pytest.raises(CheckpointError, match="not a TorchScript"):
        FarlFaceParser(not_a_model)


def test_render_mask_overlay_writes_the_picture(tmp_path):
    generator = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (16, 224, 224, 3), dtype=torch.uint8, generator=generator)
    labels = LandmarkFaceParser()(frames, LANDMARKS.expand(16, 5, 2))
    mask = generate_mask("fasking", 16, 224, 16, 2, 0.9, 0, label_maps=labels)
    path = tmp_path / "mask.png"
    returned = render_mask_overlay(frames, labels, mask, path, frame_indices=list(range(100, 132, 2)))
    assert path.is_file()
    picture = np.asarray(Image.open(path).convert("RGB"))
    # A line naming the frames, three rows of 224 pixels named on the left, the legend.
    assert picture.shape[1] == ROW_LABEL_WIDTH + 4 * 224
    assert CAPTION_HEIGHT + 3 * 224 < picture.shape[0] <= CAPTION_HEIGHT + 3 * 224 + 60
    assert returned.size == (picture.shape[1], picture.shape[0])
    for row in range(3):  # each row's name is written (dark pixels) beside it
        assert picture[CAPTION_HEIGHT + row * 224 : CAPTION_HEIGHT + (row + 1) * 224, :ROW_LABEL_WIDTH].min() < 100
    for column in range(4):  # each column's frame is named above it
        names = picture[:CAPTION_HEIGHT, ROW_LABEL_WIDTH + column * 224 : ROW_LABEL_WIDTH + (column + 1) * 224]
        assert names.min() < 100

    # Columns show tubelets 0, 2, 5, 7 by their first frames: rows frame / parsing / mask.
    frame = frames[10].numpy().astype(float)  # tubelet 5, column 2
    column = picture[CAPTION_HEIGHT:, ROW_LABEL_WIDTH + 2 * 224 : ROW_LABEL_WIDTH + 3 * 224].astype(float)
    assert np.array_equal(column[:224], frame)
    eye_y, eye_x = 100, 80
    expected_eye = 0.4 * frame[eye_y, eye_x] + 0.6 * np.array(LAPA_PALETTE[4])
    assert np.abs(column[224 + eye_y, eye_x] - expected_eye).max() <= 1
    assert np.array_equal(column[224 + 3, 3], frame[3, 3])  # background is not coloured
    tubelet_mask = mask.view(8, 14, 14)[5]
    masked_h, masked_w = tubelet_mask.nonzero()[0].tolist()
    visible_h, visible_w = (~tubelet_mask).nonzero()[0].tolist()
    masked_pixel = column[448 + 16 * masked_h + 5, 16 * masked_w + 5]
    assert np.abs(masked_pixel - (0.15 * frame[16 * masked_h + 5, 16 * masked_w + 5] + 0.85 * 128)).max() <= 1
    assert np.array_equal(
        column[448 + 16 * visible_h + 5, 16 * visible_w + 5], frame[16 * visible_h + 5, 16 * visible_w + 5]
    )


def test_render_fasking_preview(tmp_path):
    frames = blank_crops(16) + 90
    path = tmp_path / "preview.png"
    picture = render_fasking_preview(
        frames, LANDMARKS.expand(16, 5, 2), path, mask_ratio=0.9, patch_size=16, tubelet_size=2, num_shown=2
    )
    assert path.is_file() and picture.size[0] == ROW_LABEL_WIDTH + 2 * 224
    assert Image.open(path).size == picture.size
    # The title line (strategy and ratio) above the frames' names: text in it.
    assert np.asarray(picture.convert("L"))[:TITLE_HEIGHT].min() < 100


class FirstChannelFarl(torch.nn.Module):
    """A stand-in FaRL whose logits are the input's channels: label c where channel c is the brightest."""

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        padding = torch.zeros_like(images[:, :1]).expand(-1, 8, -1, -1) - 1.0
        return torch.cat([images, padding], dim=1), images.mean(dim=1)  # (b, 11, 448, 448)


def test_farl_channel_order_swaps_the_channels_the_model_receives(tmp_path):
    path = tmp_path / "first_channel_farl.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(FirstChannelFarl()).save(str(path))
    crops = blank_crops(1)
    crops[..., 0], crops[..., 2] = 200, 50  # red brightest, blue dimmest
    inside = (slice(None), slice(4, -4), slice(4, -4))  # the border blends with grid_sample's zero padding
    assert (FarlFaceParser(path)(crops, LANDMARKS[None])[inside] == 0).all()  # channel 0 is red
    assert (FarlFaceParser(path, channel_order="bgr")(crops, LANDMARKS[None])[inside] == 2).all()  # red comes last
    assert FarlFaceParser(path, channel_order="bgr").cache_name != FarlFaceParser(path).cache_name
    with pytest.raises(ValueError, match="channel_order"):
        FarlFaceParser(path, channel_order="brg")


def test_farl_channel_order_flags(tmp_path):
    from marlin_transformers import cli
    from marlin_transformers.pretraining.arguments import PretrainingArguments

    args = PretrainingArguments(output_dir=str(tmp_path), train_data=["x"], farl_channel_order="bgr")
    assert args.farl_channel_order == "bgr" and PretrainingArguments.farl_channel_order == "rgb"
    flags = ["show-mask", "v.mp4", "--farl-model", "m.pt", "--farl-channel-order", "bgr"]
    assert cli.build_parser().parse_args(flags).farl_channel_order == "bgr"
    assert cli.build_parser().parse_args(["show-mask", "v.mp4"]).farl_channel_order == "rgb"
