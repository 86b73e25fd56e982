"""Multi-crop augmentation: output shapes and ranges, crop boxes, and per-view probabilities."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pretrain.augment import MultiCropAugmentation, resized_crops, sample_crop_boxes
from pretrain.config import AugmentConfig

OFF = dict(flip_p=0.0, color_jitter_p=0.0, grayscale_p=0.0, blur_p=(0.0, 0.0, 0.0), solarize_p=0.0)


def padded_batch(sizes, t=1, seed=0):
    """Random uint8 frames of different sizes, zero-padded like the data loader does."""
    gen = torch.Generator().manual_seed(seed)
    h = max(s[0] for s in sizes)
    w = max(s[1] for s in sizes)
    frames = torch.zeros(len(sizes), t, 3, h, w, dtype=torch.uint8)
    for b, (fh, fw) in enumerate(sizes):
        frames[b, :, :, :fh, :fw] = torch.randint(0, 256, (t, 3, fh, fw), generator=gen)
    return frames, torch.tensor(sizes)


def test_views_shapes_dtypes_and_ranges():
    cfg = AugmentConfig(global_crop_size=48, local_crop_size=24, local_crops=3)
    aug = MultiCropAugmentation(cfg)
    frames, sizes = padded_batch([(60, 100), (90, 70), (40, 40)], t=2)
    torch.manual_seed(0)
    views = aug(frames, sizes)
    assert aug.num_crops == len(views) == 5
    assert [tuple(v.shape) for v in views] == [(3, 3, 48, 48)] * 2 + [(3, 3, 24, 24)] * 3
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    for v in views:
        assert v.dtype == torch.float32 and torch.isfinite(v).all()
        pixels = v * std + mean  # undo the normalisation: back in [0, 1]
        assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
        assert pixels.std() > 0.05  # real content, not a constant


def test_rejects_frames_that_are_not_uint8_batches():
    aug = MultiCropAugmentation(AugmentConfig(global_crop_size=16, local_crop_size=8))
    with pytest.raises(ValueError, match=r"uint8 \[B, T, 3, H, W\]"):
        aug(torch.rand(2, 1, 3, 32, 32), torch.tensor([[32, 32]] * 2))


def test_crop_boxes_lie_inside_frames_with_scale_and_ratio_in_range():
    torch.manual_seed(0)
    sizes = torch.tensor([[480, 854], [300, 200], [97, 401]]).repeat(200, 1)
    boxes = sample_crop_boxes(sizes, scale=(0.05, 0.4), ratio=(3 / 4, 4 / 3))
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (h >= 1).all() and (w >= 1).all()
    assert (top + h <= sizes[:, 0]).all() and (left + w <= sizes[:, 1]).all()
    area = (h * w).double() / (sizes[:, 0] * sizes[:, 1]).double()
    assert area.min() > 0.05 * 0.9 and area.max() < 0.4 * 1.1  # rounding to whole pixels
    ratio = w.double() / h.double()
    assert ratio.min() > 0.75 * 0.95 and ratio.max() < 4 / 3 * 1.05
    assert len(set(map(tuple, boxes.tolist()))) > 500  # random, not a fixed crop


def test_crop_box_falls_back_to_a_centred_crop():
    # A 4 x 200 strip cannot hold a crop of ratio <= 4/3 covering >= 40 % of its area.
    boxes = sample_crop_boxes(torch.tensor([[4, 200]]), scale=(0.4, 1.0))
    assert boxes.tolist() == [[0, 97, 4, 5]]  # height 4, width round(4 * 4/3), centred


def test_resized_crops_keep_constant_regions_and_pick_the_box():
    frames = torch.zeros(2, 3, 40, 60, dtype=torch.uint8)
    frames[0, :, :20] = 200
    frames[1] = 51
    boxes = torch.tensor([[0, 0, 20, 60], [5, 5, 30, 30], [20, 0, 20, 60], [0, 0, 40, 60]])
    out = resized_crops(frames, boxes, size=16, repeats=2)
    assert out.shape == (4, 3, 16, 16)
    torch.testing.assert_close(out[0], torch.full((3, 16, 16), 200 / 255))
    torch.testing.assert_close(out[1], torch.full((3, 16, 16), 51 / 255))
    torch.testing.assert_close(out[2], torch.zeros(3, 16, 16))  # box 2 is in frame 0
    torch.testing.assert_close(out[3], torch.full((3, 16, 16), 51 / 255))


@pytest.mark.parametrize("size,scale,repeats", [(48, (0.4, 1.0), 1), (24, (0.05, 0.4), 3)])
def test_batched_crops_equal_resizing_each_crop(size, scale, repeats):
    # The GPU path (batched matrix products) against the CPU path (one resize per crop), on
    # real-like content: downscaled crops and, for the small boxes, upscaled ones.
    torch.manual_seed(0)
    frames = torch.randint(0, 256, (4, 3, 60, 90), dtype=torch.uint8)
    boxes = sample_crop_boxes(
        torch.tensor([[60, 90], [60, 90], [50, 70], [60, 90]] * repeats), scale
    )
    one_by_one = resized_crops(frames, boxes, size, repeats)  # "auto" on the CPU
    assert torch.equal(one_by_one, resized_crops(frames, boxes, size, repeats, "one_by_one"))
    batched = resized_crops(frames, boxes, size, repeats, method="batched")
    assert batched.shape == (4 * repeats, 3, size, size)
    torch.testing.assert_close(batched, one_by_one, atol=2e-5, rtol=0)
    with pytest.raises(ValueError, match="method must be one of"):
        resized_crops(frames, boxes, size, repeats, method="bilinear")


def normalised(value, cfg):
    return (torch.tensor([value] * 3) - torch.tensor(cfg.mean)) / torch.tensor(cfg.std)


def test_solarisation_applies_to_the_second_global_view_only():
    cfg = AugmentConfig(global_crop_size=16, local_crop_size=8, local_crops=2, **OFF)
    cfg = dataclasses.replace(cfg, solarize_p=1.0)
    frames = torch.full((2, 1, 3, 30, 30), 204, dtype=torch.uint8)  # 0.8
    views = MultiCropAugmentation(cfg)(frames, torch.tensor([[30, 30]] * 2))
    for k, v in enumerate(views):
        value = 1 - 0.8 if k == 1 else 0.8
        expected = normalised(value, cfg).view(1, 3, 1, 1).expand_as(v)
        torch.testing.assert_close(v, expected, atol=1e-5, rtol=0)


def test_temporal_views_take_the_second_global_view_from_the_second_frame():
    cfg = AugmentConfig(global_crop_size=16, local_crop_size=8, local_crops=2, **OFF)
    frames = torch.zeros(1, 2, 3, 20, 20, dtype=torch.uint8)
    frames[:, 0] = 51
    frames[:, 1] = 153
    views = MultiCropAugmentation(cfg)(frames, torch.tensor([[20, 20]]))
    for k, v in enumerate(views):
        value = 153 / 255 if k == 1 else 51 / 255
        expected = normalised(value, cfg).view(1, 3, 1, 1).expand_as(v)
        torch.testing.assert_close(v, expected, atol=1e-5, rtol=0)


def fraction(mask):
    return mask.float().mean().item()


def test_probabilities_per_view():
    """Gray, solarised and blurred views appear at the rates of DINO's recipe."""
    n = 600
    torch.manual_seed(0)
    frames, sizes = padded_batch([(24, 24)] * n, seed=1)
    cfg = AugmentConfig(global_crop_size=16, local_crop_size=16, local_crops=1, **OFF)
    # Grayscale p = 0.2 on every view (colour noise stays colourful otherwise).
    views = MultiCropAugmentation(dataclasses.replace(cfg, grayscale_p=0.2))(frames, sizes)
    for v in views:
        pixels = v * torch.tensor(cfg.std).view(1, 3, 1, 1) + torch.tensor(cfg.mean).view(
            1, 3, 1, 1
        )
        gray = (pixels.amax(1) - pixels.amin(1)).flatten(1).amax(1) < 1e-5
        assert fraction(gray) == pytest.approx(0.2, abs=0.06)
    # Blur (sigma forced large enough to see) p = 1.0 / 0.1 / 0.5: high frequencies vanish.
    blur = dataclasses.replace(cfg, blur_p=(1.0, 0.1, 0.5), blur_sigma=(1.5, 2.0))
    plain = MultiCropAugmentation(cfg)
    torch.manual_seed(0)
    reference = plain(frames, sizes)
    torch.manual_seed(0)
    views = MultiCropAugmentation(blur)(frames, sizes)
    for v, ref, p in zip(views, reference, (1.0, 0.1, 0.5), strict=True):
        blurred = v.flatten(1).std(1) < 0.6 * ref.flatten(1).std(1)
        assert fraction(blurred) == pytest.approx(p, abs=0.06)
    # Solarisation p = 0.2 on the second global view, never elsewhere.
    solar = dataclasses.replace(cfg, solarize_p=0.2)
    bright = torch.full_like(frames, 230)
    views = MultiCropAugmentation(solar)(bright, sizes)
    for k, v in enumerate(views):
        flipped = v[:, 0, 0, 0] < normalised(0.5, cfg)[0]
        assert fraction(flipped) == pytest.approx(0.2 if k == 1 else 0.0, abs=0.06)
    # Horizontal flip p = 0.5: a left-bright frame comes out right-bright half the time.
    ramp = torch.zeros_like(frames)
    ramp[..., :12] = 255
    crops = dataclasses.replace(cfg, flip_p=0.5, global_crop_scale=(1.0, 1.0), crop_ratio=(1, 1))
    crops = dataclasses.replace(crops, local_crop_scale=(1.0, 1.0))
    views = MultiCropAugmentation(crops)(ramp, sizes)
    for v in views:
        mirrored = v[:, 0, :, 0].mean(1) < v[:, 0, :, -1].mean(1)
        assert fraction(mirrored) == pytest.approx(0.5, abs=0.07)
