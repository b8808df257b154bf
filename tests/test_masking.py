import pytest
import torch

from marlin_transformers.constants import num_visible_tokens
from marlin_transformers.pretraining.masking import (
    MASKING_STRATEGIES,
    generate_mask,
    generate_masks,
    seeded_generator,
)

# The paper's clip: 16 frames of 224 pixels, 2x16x16 tubelets -> (8, 14, 14) = 1568 tokens.
CLIP = {"num_frames": 16, "image_size": 224, "patch_size": 16, "tubelet_size": 2}
GRID_T, GRID_H, GRID_W = 8, 14, 14
NUM_TOKENS = GRID_T * GRID_H * GRID_W


def token_index(t, h, w):
    return t * GRID_H * GRID_W + h * GRID_W + w


def patch_label_maps(patch_labels: torch.Tensor) -> torch.Tensor:
    """(16, 224, 224) label maps where every 16x16 patch holds one label, from (14, 14) labels repeated over time."""
    pixels = patch_labels.repeat_interleave(16, dim=0).repeat_interleave(16, dim=1)
    return pixels.to(torch.uint8).expand(CLIP["num_frames"], -1, -1).clone()


def face_patches() -> torch.Tensor:
    """(14, 14) patch labels: a 10-patch background border strip, a skin face, and 84 patches of facial parts."""
    labels = torch.ones(14, 14, dtype=torch.long)  # skin
    labels[0, :10] = 0  # background: 10 patches
    labels[1:3, :] = 10  # hair: 28
    labels[4, 1:5], labels[5, 1:5] = 2, 4  # right brow and eye: 8
    labels[4, 9:13], labels[5, 9:13] = 3, 5  # left brow and eye: 8
    labels[6:10, 5:9] = 6  # nose: 16
    labels[10, 3:11], labels[11, 3:11], labels[12, 3:11] = 7, 8, 9  # mouth: 24
    assert (labels >= 2).sum() == 84 and (labels == 0).sum() == 10
    return labels


def tokens_with_labels(patch_labels: torch.Tensor, labels) -> torch.Tensor:
    """(1568,) bool: tokens whose patch holds one of `labels`, in every tubelet-frame."""
    selected = torch.isin(patch_labels, torch.tensor(labels))
    return torch.stack(
        [selected[h, w] for t in range(GRID_T) for h in range(GRID_H) for w in range(GRID_W)]
    )  # built with the explicit index order t * 196 + h * 14 + w


@pytest.mark.parametrize("strategy", MASKING_STRATEGIES)
@pytest.mark.parametrize("mask_ratio", [0.5, 0.75, 0.8, 0.9, 0.95])
def test_every_strategy_masks_the_exact_count(strategy, mask_ratio):
    label_maps = patch_label_maps(face_patches())
    for seed in range(3):
        mask = generate_mask(strategy, **CLIP, mask_ratio=mask_ratio, generator=seed, label_maps=label_maps)
        assert mask.shape == (NUM_TOKENS,) and mask.dtype == torch.bool
        assert (~mask).sum() == int((1 - mask_ratio) * NUM_TOKENS) == num_visible_tokens(NUM_TOKENS, mask_ratio)
    assert num_visible_tokens(NUM_TOKENS, 0.9) == 156


def test_exact_count_on_a_tiny_clip():
    # 4 frames of 32 pixels: (2, 2, 2) = 8 tokens; int(0.5 * 8) = 4 visible, int(0.25 * 8) = 2.
    label_maps = torch.zeros(4, 32, 32, dtype=torch.uint8)
    label_maps[:, 16:, :] = 1
    for strategy in MASKING_STRATEGIES:
        for ratio, visible in ((0.5, 4), (0.75, 2), (0.0, 8)):
            mask = generate_mask(strategy, 4, 32, 16, 2, ratio, 0, label_maps=label_maps)
            assert (~mask).sum() == visible, (strategy, ratio)


def test_fasking_masks_facial_parts_before_background_and_skin():
    patches = face_patches()
    parts = tokens_with_labels(patches, list(range(2, 11)))
    background = tokens_with_labels(patches, [0])
    background_or_skin = tokens_with_labels(patches, [0, 1])
    label_maps = patch_label_maps(patches)
    for seed in range(5):
        # 0.75 leaves 49 visible per tubelet-frame: more than the 10 background patches, fewer than background + skin.
        mask = generate_mask("fasking", **CLIP, mask_ratio=0.75, generator=seed, label_maps=label_maps)
        assert mask[parts].all()
        assert not mask[background_or_skin].all()
        assert (~mask & ~background_or_skin).sum() == 0
        # 0.95 leaves 9.8 -> 10 visible per tubelet-frame: the background alone suffices.
        mask = generate_mask("fasking", **CLIP, mask_ratio=0.95, generator=seed, label_maps=label_maps)
        assert (~mask & ~background).sum() == 0


def test_fasking_opp_masks_background_and_skin_first():
    patches = face_patches()
    parts = tokens_with_labels(patches, list(range(2, 11)))
    label_maps = patch_label_maps(patches)
    for seed in range(5):
        mask = generate_mask("fasking_opp", **CLIP, mask_ratio=0.75, generator=seed, label_maps=label_maps)
        assert (~mask & ~parts).sum() == 0  # every visible token is a facial part
        assert not mask[parts].all()


def test_fasking_reveals_part_groups_in_a_random_order_one_label_at_a_time():
    # fasking_opp at 0.95 needs 10 visible patches per tubelet-frame: which part group(s) reach them depends on the
    # seed's group order. Labels are revealed one at a time, so when the mouth comes first, upper lip (8 patches)
    # and inner mouth (8) reach 10 and the lower lip stays masked.
    patches = face_patches()
    label_maps = patch_label_maps(patches)
    groups = {"right": [2, 4], "left": [3, 5], "nose": [6], "mouth": [7, 8, 9], "hair": [10]}
    group_tokens = {name: tokens_with_labels(patches, labels) for name, labels in groups.items()}
    lower_lip = tokens_with_labels(patches, [9])
    visible_groups = set()
    for seed in range(30):
        visible = ~generate_mask("fasking_opp", **CLIP, mask_ratio=0.95, generator=seed, label_maps=label_maps)
        holding = frozenset(name for name, tokens in group_tokens.items() if (visible & tokens).any())
        visible_groups.add(holding)
        if holding == {"mouth"}:
            assert not (visible & lower_lip).any()
    assert len(visible_groups) >= 4
    assert {frozenset({"nose"}), frozenset({"hair"}), frozenset({"mouth"})} <= visible_groups


def test_a_patch_belongs_to_a_label_if_any_of_its_pixels_has_it():
    # All skin, but 30 patches per frame hold a single background pixel: only those become visible at 0.9.
    label_maps = torch.ones(16, 224, 224, dtype=torch.uint8)
    candidates = torch.zeros(GRID_T, GRID_H, GRID_W, dtype=torch.bool)
    generator = torch.Generator().manual_seed(0)
    for t in range(GRID_T):
        for index in torch.randperm(196, generator=generator)[:30].tolist():
            h, w = divmod(index, 14)
            label_maps[2 * t, 16 * h + 7, 16 * w + 3] = 0
            label_maps[2 * t + 1, 16 * h, 16 * w] = 0  # second frame of a tubelet: ignored
            candidates[t, h, w] = True
    mask = generate_mask("fasking", **CLIP, mask_ratio=0.9, generator=1, label_maps=label_maps)
    assert (~mask & ~candidates.flatten()).sum() == 0


def test_fasking_uses_the_first_frame_of_each_tubelet():
    patches = face_patches()
    label_maps = patch_label_maps(patches)
    label_maps[1::2] = 0  # second frames: no face; must not change anything
    parts = tokens_with_labels(patches, list(range(2, 11)))
    mask = generate_mask("fasking", **CLIP, mask_ratio=0.75, generator=0, label_maps=label_maps)
    assert mask[parts].all()


def test_fasking_falls_back_to_random_without_a_face():
    label_maps = torch.zeros(16, 224, 224, dtype=torch.uint8)
    seen_visible = torch.zeros(NUM_TOKENS, dtype=torch.bool)
    for seed in range(40):
        mask = generate_mask("fasking", **CLIP, mask_ratio=0.9, generator=seed, label_maps=label_maps)
        assert (~mask).sum() == 156
        seen_visible |= ~mask
    # 40 random draws of 156 of 1568 leave a token never visible with probability 0.9 ** 40 ~ 1.5%.
    assert seen_visible.float().mean() > 0.95

    # One tubelet without a face among faces: its part positions can be visible, unlike the faces' parts.
    patches = face_patches()
    label_maps = patch_label_maps(patches)
    label_maps[6:8] = 0  # tubelet 3
    parts = tokens_with_labels(patches, list(range(2, 11))).view(GRID_T, -1)
    mask = generate_mask("fasking", **CLIP, mask_ratio=0.75, generator=0, label_maps=label_maps).view(GRID_T, -1)
    assert not mask[3][parts[3]].all()
    assert mask[[0, 1, 2, 4, 5, 6, 7]][parts[[0, 1, 2, 4, 5, 6, 7]]].all()


@pytest.mark.parametrize("strategy", MASKING_STRATEGIES)
def test_same_seed_same_mask_other_seed_other_mask(strategy):
    label_maps = patch_label_maps(face_patches())
    args = (strategy, *CLIP.values(), 0.9)
    first = generate_mask(*args, seeded_generator(7), label_maps=label_maps)
    assert torch.equal(first, generate_mask(*args, seeded_generator(7), label_maps=label_maps))
    assert torch.equal(first, generate_mask(*args, 7, label_maps=label_maps))  # an int seed means the same
    assert not torch.equal(first, generate_mask(*args, seeded_generator(8), label_maps=label_maps))


def test_seeded_generator_gives_each_sample_its_own_stream():
    draws = {tuple(torch.rand(4, generator=seeded_generator(0, 3, index)).tolist()) for index in range(10)}
    assert len(draws) == 10
    assert torch.equal(
        torch.rand(4, generator=seeded_generator(0, 3, 5)), torch.rand(4, generator=seeded_generator(0, 3, 5))
    )
    assert not torch.equal(
        torch.rand(4, generator=seeded_generator(0, 3, 5)), torch.rand(4, generator=seeded_generator(0, 5, 3))
    )


def test_tube_mask_is_constant_over_time():
    # 0.75: 49 visible per tubelet-frame, 8 * 49 = 392 = int(0.25 * 1568): exactly one mask repeated.
    mask = generate_mask("tube", **CLIP, mask_ratio=0.75, generator=0).view(GRID_T, -1)
    assert (mask == mask[0]).all()
    assert (~mask[0]).sum() == 49
    # 0.9: 20 visible per frame (160 in all) cut to 156; every frame's visible tokens lie in one 20-token pattern.
    mask = generate_mask("tube", **CLIP, mask_ratio=0.9, generator=0).view(GRID_T, -1)
    pattern = (~mask).any(dim=0)
    assert pattern.sum() == 20
    assert ((~mask).sum(dim=1) >= 16).all()


def test_frame_mask_masks_whole_tubelet_frames():
    # 0.5: 4 of 8 tubelet-frames visible, 4 * 196 = 784 = int(0.5 * 1568).
    mask = generate_mask("frame", **CLIP, mask_ratio=0.5, generator=3).view(GRID_T, -1)
    per_frame = mask.all(dim=1)
    assert (mask == per_frame[:, None]).all()
    assert per_frame.sum() == 4
    # 0.9: one tubelet-frame visible, cut to 156 of its 196 tokens.
    mask = generate_mask("frame", **CLIP, mask_ratio=0.9, generator=3).view(GRID_T, -1)
    assert (~mask).any(dim=1).sum() == 1
    assert (~mask).sum() == 156


def test_random_mask_is_spread_over_the_clip():
    mask = generate_mask("random", **CLIP, mask_ratio=0.5, generator=0).view(GRID_T, -1)
    assert ((~mask).sum(dim=1) > 50).all()


def test_batched_masks():
    labels = patch_label_maps(face_patches())
    masks = generate_masks("fasking", 3, **CLIP, mask_ratio=0.9, generator=0, label_maps=torch.stack([labels] * 3))
    assert masks.shape == (3, NUM_TOKENS)
    assert ((~masks).sum(dim=1) == 156).all()
    assert not torch.equal(masks[0], masks[1])
    assert torch.equal(
        masks, generate_masks("fasking", 3, **CLIP, mask_ratio=0.9, generator=0, label_maps=[labels] * 3)
    )
    assert generate_masks("random", 2, **CLIP, mask_ratio=0.9, generator=0).shape == (2, NUM_TOKENS)


def test_bad_arguments_raise():
    labels = patch_label_maps(face_patches())
    with pytest.raises(ValueError, match="Unknown mask strategy"):
        generate_mask("face", **CLIP, mask_ratio=0.9, generator=0)
    with pytest.raises(ValueError, match="label_maps"):
        generate_mask("fasking", **CLIP, mask_ratio=0.9, generator=0)
    with pytest.raises(ValueError, match="shape"):
        generate_mask("fasking", **CLIP, mask_ratio=0.9, generator=0, label_maps=labels[:8])
    with pytest.raises(ValueError, match="LaPa labels"):
        generate_mask("fasking", **CLIP, mask_ratio=0.9, generator=0, label_maps=labels * 20)
    with pytest.raises(ValueError, match="mask_ratio"):
        generate_mask("random", **CLIP, mask_ratio=1.0, generator=0)
    with pytest.raises(ValueError, match="multiple"):
        generate_mask("random", 15, 224, 16, 2, 0.9, 0)
    with pytest.raises(ValueError, match="batch"):
        generate_masks("fasking", 2, **CLIP, mask_ratio=0.9, generator=0, label_maps=labels[None])
