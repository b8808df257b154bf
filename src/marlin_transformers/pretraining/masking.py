"""Token masks for MARLIN pretraining: random, tube, frame, and the paper's face-guided Fasking.

A clip of `num_frames` frames of `image_size` pixels is cut into tubelets of `tubelet_size x patch_size x patch_size`,
giving a token grid of `(num_frames // tubelet_size, image_size // patch_size, image_size // patch_size)`, (8, 14, 14)
= 1568 tokens for 16 frames of 224 pixels. Token `t * 196 + h * 14 + w` is the tubelet at time `t`, row `h`, column
`w`: the order of a Conv3d patch embedding flattened.

Masks are `bool_masked_pos`: True where a token is MASKED (hidden from the encoder), the Transformers convention. The
MARLIN reference builds masks with True where a token is VISIBLE; every function here returns the flipped convention.

Every strategy masks exactly `num_tokens - int((1 - mask_ratio) * num_tokens)` tokens (1412 of 1568 at 0.9), so masks
of one clip size batch together. As in the reference, each strategy first picks a set of candidate visible tokens and
then cuts that set at random to exactly `int((1 - mask_ratio) * num_tokens)` (`num_visible_tokens`). For "tube" and
"frame" the candidate set can be a few tokens larger than that (160 for 156 at 0.9), so a handful of extra tokens is
masked at random; with a ratio that divides evenly (e.g. 0.75) the tube mask is exactly constant over time.

All randomness goes through a `torch.Generator`. In a dataset, derive one per sample so masks do not depend on the
number of dataloader workers or on which worker loads a sample:

    def __getitem__(self, index):
        generator = seeded_generator(self.seed, self.epoch, index)
        bool_masked_pos = generate_mask("fasking", 16, 224, 16, 2, 0.9, generator, label_maps=label_maps)

(`seeded_generator(seed, torch.utils.data.get_worker_info().id)` gives a per-worker generator instead, if a stream
per worker is wanted.)
"""

import inspect
import math

import numpy as np
import torch

from ..configuration_marlin import MASKING_STRATEGIES
from ..constants import num_visible_tokens

NUM_LAPA_LABELS = 11
# LaPa labels: 0 background, 1 skin, 2/3 brows, 4/5 eyes, 6 nose, 7 upper lip, 8 inner mouth, 9 lower lip, 10 hair.
# The five facial-part groups (one brow with its eye, the other brow with its eye, nose, mouth, hair), then skin and
# background, as in the reference's `seg_groups`.
FACE_PART_GROUPS = ((2, 4), (3, 5), (6,), (7, 8, 9), (10,))
SKIN_GROUP = (1,)
BACKGROUND_GROUP = (0,)


def seeded_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU `torch.Generator` whose seed mixes `seed` with `keys` (e.g. epoch, sample index or worker id).

    Nearby keys give unrelated streams (the mixing is NumPy's `SeedSequence`), so
    `seeded_generator(seed, epoch, index)` makes every sample's mask reproducible whatever the number of workers.
    """
    state = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint32)
    generator = torch.Generator()
    generator.manual_seed(int(state[0]) << 32 | int(state[1]))
    return generator


def generate_mask(
    strategy: str,
    num_frames: int,
    image_size: int,
    patch_size: int,
    tubelet_size: int,
    mask_ratio: float,
    generator: torch.Generator | int,
    label_maps: torch.Tensor | np.ndarray | None = None,
) -> torch.BoolTensor:
    """One clip's mask.

    Args:
        strategy: one of `MASKING_STRATEGIES`.
            "random": uniformly random tokens.
            "tube": one random 2-D mask repeated over every tubelet-frame (VideoMAE's tube masking).
            "frame": whole tubelet-frames masked; `ceil((1 - mask_ratio) * num_frames // tubelet_size)` stay visible.
            "fasking": facial parts masked first (background, then skin, made visible first), the paper's strategy.
            "fasking_opp": the opposite: the five part groups made visible first, then skin, background last.
        num_frames: frames per clip.
        image_size: frame height and width in pixels.
        patch_size: tubelet side in pixels.
        tubelet_size: frames per tubelet.
        mask_ratio: fraction of tokens to mask, in [0, 1).
        generator: a `torch.Generator`, or an int seed for a fresh one.
        label_maps: `(num_frames, image_size, image_size)` LaPa label maps (integers 0..10), needed by the Fasking
            strategies. Only the first frame of each tubelet is used. A frame without a face should be all zeros
            (background); that tubelet then falls back to random masking.

    Returns:
        `(num_tokens,)` bool, True where masked, with exactly `num_tokens - num_visible_tokens(num_tokens, mask_ratio)`
        True.
    """
    grid_t, grid_hw = _token_grid(num_frames, image_size, patch_size, tubelet_size)
    num_tokens = grid_t * grid_hw
    if not 0 <= mask_ratio < 1:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}.")
    if isinstance(generator, int):
        generator = seeded_generator(generator)

    if strategy == "random":
        candidates = torch.ones(num_tokens, dtype=torch.bool)
    elif strategy == "tube":
        visible_per_frame = math.ceil(grid_hw * (1 - mask_ratio))
        frame = _random_subset(torch.ones(grid_hw, dtype=torch.bool), visible_per_frame, generator)
        candidates = frame.repeat(grid_t)  # (t * h * w,)
    elif strategy == "frame":
        visible_frames = math.ceil(grid_t * (1 - mask_ratio))
        frames = _random_subset(torch.ones(grid_t, dtype=torch.bool), visible_frames, generator)
        candidates = frames.repeat_interleave(grid_hw)  # (t * h * w,)
    elif strategy in ("fasking", "fasking_opp"):
        if label_maps is None:
            raise ValueError(f"The {strategy!r} strategy needs `label_maps` (LaPa face parsing of every frame).")
        label_maps = torch.as_tensor(label_maps)
        expected = (num_frames, image_size, image_size)
        if tuple(label_maps.shape) != expected:
            raise ValueError(f"label_maps must have shape {expected}, got {tuple(label_maps.shape)}.")
        candidates = _fasking_candidates(
            label_maps[::tubelet_size], patch_size, mask_ratio, strategy == "fasking_opp", generator
        ).flatten()
    else:
        raise ValueError(f"Unknown mask strategy {strategy!r}; choose one of {', '.join(MASKING_STRATEGIES)}.")

    visible = _random_subset(candidates, num_visible_tokens(num_tokens, mask_ratio), generator)
    return ~visible


def generate_masks(strategy: str, batch_size: int, *args, **kwargs) -> torch.BoolTensor:
    """A batch of masks, `(batch_size, num_tokens)` bool, True where masked, drawn in turn from one generator.

    The arguments after `batch_size` are those of `generate_mask` after `strategy` (clip size, `mask_ratio`,
    `generator`), except that `label_maps` is `(batch_size, num_frames, image_size, image_size)` for the Fasking
    strategies.
    """
    arguments = inspect.signature(generate_mask).bind(strategy, *args, **kwargs).arguments
    label_maps = arguments.pop("label_maps", None)
    if isinstance(arguments["generator"], int):
        arguments["generator"] = seeded_generator(arguments["generator"])
    if label_maps is not None and len(label_maps) != batch_size:
        raise ValueError(f"label_maps holds {len(label_maps)} clips for a batch of {batch_size}.")
    masks = [
        generate_mask(**arguments, label_maps=None if label_maps is None else label_maps[i]) for i in range(batch_size)
    ]
    return torch.stack(masks)


def _token_grid(num_frames: int, image_size: int, patch_size: int, tubelet_size: int) -> tuple[int, int]:
    """(tubelet-frames, tokens per tubelet-frame), validating that the sizes divide."""
    if num_frames % tubelet_size or image_size % patch_size:
        raise ValueError(
            f"num_frames ({num_frames}) must be a multiple of tubelet_size ({tubelet_size}) and image_size "
            f"({image_size}) of patch_size ({patch_size})."
        )
    return num_frames // tubelet_size, (image_size // patch_size) ** 2


def _random_subset(candidates: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """A bool mask selecting exactly `count` positions, uniformly at random among the True ones of `candidates`.

    Should `candidates` hold fewer than `count`, the rest is drawn at random from the False positions.
    """
    # Candidates score in [0, 1), the others in [1, 2): the `count` lowest are a uniform draw among candidates.
    scores = torch.rand(candidates.shape, generator=generator) + (~candidates).float()
    chosen = torch.zeros_like(candidates)
    chosen[scores.argsort()[:count]] = True
    return chosen


def _fasking_candidates(
    label_maps: torch.Tensor, patch_size: int, mask_ratio: float, opposite: bool, generator: torch.Generator
) -> torch.Tensor:
    """Fasking's visible candidates, before the cut to an exact count.

    Args:
        label_maps: `(grid_t, image_size, image_size)` LaPa labels, one map per tubelet (its first frame).
        opposite: False for "fasking" (background, skin, then parts in random order become visible), True for
            "fasking_opp" (parts in random order, skin, background).

    Returns:
        `(grid_t, grid_h * grid_w)` bool, True where visible.
    """
    grid_t, height, width = label_maps.shape
    grid_h, grid_w = height // patch_size, width // patch_size
    if label_maps.min() < 0 or label_maps.max() >= NUM_LAPA_LABELS:
        raise ValueError(f"label_maps must hold LaPa labels 0..{NUM_LAPA_LABELS - 1}.")

    # present[t, label, patch]: some pixel of that patch has that label (the reference's max-pool per label).
    pixels = label_maps.reshape(grid_t, grid_h, patch_size, grid_w, patch_size).permute(0, 1, 3, 2, 4)
    pixels = pixels.reshape(grid_t * grid_h * grid_w, patch_size * patch_size).long()  # (t * patches, p * p)
    present = torch.zeros(pixels.shape[0], NUM_LAPA_LABELS, dtype=torch.bool).scatter_(1, pixels, True)
    present = present.view(grid_t, grid_h * grid_w, NUM_LAPA_LABELS).transpose(1, 2)  # (t, 11, patches)

    # One random order of the part groups for the whole clip, as in the reference.
    parts = [FACE_PART_GROUPS[i] for i in torch.randperm(len(FACE_PART_GROUPS), generator=generator).tolist()]
    groups = [*parts, SKIN_GROUP, BACKGROUND_GROUP] if opposite else [BACKGROUND_GROUP, SKIN_GROUP, *parts]
    order = [label for group in groups for label in group]  # all 11 labels

    # Labels are revealed one at a time (the reference checks the target after each label, not each group) until at
    # least (1 - mask_ratio) of the tubelet-frame's patches are visible. The last step reveals every patch, so some
    # step always reaches the target; an all-background map (no face) reveals everything at the background step.
    revealed = present[:, order].cummax(dim=1).values  # (t, 11, patches): visible after revealing labels[:k + 1]
    counts = revealed.sum(dim=2)  # (t, 11)
    reached = counts >= (1 - mask_ratio) * grid_h * grid_w
    step = reached.int().argmax(dim=1)  # first step that reaches the target
    return revealed[torch.arange(grid_t), step]
