"""DINO's multi-crop augmentation, batched on the training device.

Each sample gives two global views and ``local_crops`` local views. Every view is a random
resized crop (bicubic, antialiased, as PIL resizes) followed by the photometric pipeline:

=====================  ==========  ==========  ==========
                       global 1    global 2    local
=====================  ==========  ==========  ==========
horizontal flip        0.5         0.5         0.5
colour jitter          0.8         0.8         0.8
grayscale              0.2         0.2         0.2
Gaussian blur          1.0         0.1         0.5
solarisation           --          0.2         --
=====================  ==========  ==========  ==========

Colour jitter is brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1 (torchvision's
formulas, kornia ``ColorJitter``; its random order of the four adjustments is drawn once per
batch of views rather than per image). Blur sigma is drawn from (0.1, 2.0) per image, with a
kernel covering three sigma. Solarisation inverts values at or above 0.5 (PIL's threshold 128).
Views are finally normalised with the ImageNet mean and std.

Random parameters come from the global torch random state, so a checkpoint's RNG state
reproduces them.
"""

from __future__ import annotations

import math

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import nn

from dinotrack.errors import InputError
from pretrain.config import AugmentConfig


def sample_crop_boxes(
    sizes: torch.Tensor,
    scale: tuple[float, float],
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> torch.Tensor:
    """Random crop boxes as torchvision's ``RandomResizedCrop`` draws them.

    For each frame, up to ``attempts`` candidates of area ``U(scale) * H * W`` and aspect
    ratio ``exp(U(log ratio))`` are drawn and the first that fits is kept; if none fits, the
    largest centred crop with the aspect ratio clamped to ``ratio`` is used.

    Args:
        sizes: int64 ``[N, 2]`` frame ``(height, width)``.
        scale: Range of the crop's area as a fraction of the frame's.
        ratio: Range of the crop's width / height.
        attempts: Candidates drawn per frame.

    Returns:
        int64 ``[N, 4]``: ``(top, left, height, width)`` of each crop, inside its frame.
    """
    sizes = sizes.to(torch.int64).cpu()
    n = sizes.shape[0]
    h = sizes[:, 0:1].double()
    w = sizes[:, 1:2].double()
    area = h * w * torch.empty(n, attempts, dtype=torch.float64).uniform_(*scale)
    log_ratio = torch.empty(n, attempts, dtype=torch.float64).uniform_(
        math.log(ratio[0]), math.log(ratio[1])
    )
    aspect = torch.exp(log_ratio)
    cw = torch.round(torch.sqrt(area * aspect))
    ch = torch.round(torch.sqrt(area / aspect))
    fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = torch.argmax(fits.to(torch.int8), dim=1, keepdim=True)
    found = fits.any(dim=1)
    ch = ch.gather(1, first).squeeze(1)
    cw = cw.gather(1, first).squeeze(1)
    h, w = h.squeeze(1), w.squeeze(1)
    # Fallback: centred crop of the whole frame with the aspect ratio clamped into range.
    frame_ratio = w / h
    fb_w = torch.where(
        frame_ratio < ratio[0], w, torch.where(frame_ratio > ratio[1], h * ratio[1], w)
    )
    fb_h = torch.where(
        frame_ratio < ratio[0], w / ratio[0], torch.where(frame_ratio > ratio[1], h, h)
    )
    ch = torch.where(found, ch, torch.round(fb_h)).clamp(1, None)
    cw = torch.where(found, cw, torch.round(fb_w)).clamp(1, None)
    ch = torch.minimum(ch, h)
    cw = torch.minimum(cw, w)
    u = torch.rand(n, 2, dtype=torch.float64)
    top = torch.where(found, torch.floor(u[:, 0] * (h - ch + 1)), torch.floor((h - ch) / 2))
    left = torch.where(found, torch.floor(u[:, 1] * (w - cw + 1)), torch.floor((w - cw) / 2))
    return torch.stack([top, left, ch, cw], dim=1).to(torch.int64)


RESIZE_METHODS = ("auto", "one_by_one", "batched")
"""How :func:`resized_crops` computes its resizes (speed only, the results agree to float
rounding): one ``F.interpolate`` per crop, a few batched matrix products for all the crops, or
``auto`` (one by one on the CPU, batched on other devices)."""


def resized_crops(
    frames: torch.Tensor, boxes: torch.Tensor, size: int, repeats: int = 1, method: str = "auto"
) -> torch.Tensor:
    """Cut ``boxes`` out of ``frames`` and resize each to ``size`` x ``size``.

    Bicubic with antialiasing, as ``F.interpolate(crop, mode="bicubic", antialias=True)``
    (and PIL) compute it, clamped to [0, 1] (bicubic overshoots at edges). On the CPU each
    crop is resized on its own (work proportional to the crop's area); on a GPU all crops go
    through a few batched matrix products (see :func:`_batched_resized_crops`), since
    hundreds of small resizes per step would be bound by kernel launches.

    Args:
        frames: uint8 ``[B, 3, H, W]``, any device.
        boxes: int64 ``[repeats * B, 4]`` ``(top, left, height, width)``; box ``k`` lies in
            frame ``k % B``.
        size: Output side in pixels.
        repeats: Crops per frame.
        method: One of :data:`RESIZE_METHODS`; ``"auto"`` picks by ``frames``' device as
            said above.

    Returns:
        float32 ``[repeats * B, 3, size, size]`` in [0, 1], on ``frames``' device.

    Raises:
        ValueError: The number of boxes is not ``repeats * B``, or an unknown ``method``.
    """
    b = frames.shape[0]
    if boxes.shape[0] != repeats * b:
        raise InputError(f"expected {repeats * b} boxes for {b} frames, got {boxes.shape[0]}")
    if method not in RESIZE_METHODS:
        raise InputError(f"method must be one of {RESIZE_METHODS}, got {method!r}")
    if method == "auto":
        method = "one_by_one" if frames.device.type == "cpu" else "batched"
    if method == "batched":
        return _batched_resized_crops(frames, boxes, size, repeats)
    return _resized_crops_one_by_one(frames, boxes, size)


def _resized_crops_one_by_one(frames: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """:func:`resized_crops` with one ``F.interpolate`` per crop (box ``k`` in frame
    ``k % B``): work proportional to each crop's area."""
    b = frames.shape[0]
    out = torch.empty(boxes.shape[0], 3, size, size, device=frames.device)
    for k, (top, left, height, width) in enumerate(boxes.tolist()):
        i = k % b
        crop = frames[i : i + 1, :, top : top + height, left : left + width].float() / 255.0
        out[k : k + 1] = F.interpolate(
            crop, size=(size, size), mode="bicubic", antialias=True, align_corners=False
        )
    return out.clamp_(0.0, 1.0)


def _batched_resized_crops(
    frames: torch.Tensor, boxes: torch.Tensor, size: int, repeats: int
) -> torch.Tensor:
    """:func:`resized_crops` as matrix products: resampling is separable, so each crop is
    ``rows @ frame @ cols.T`` with per-crop weight matrices that are zero outside its box.
    More arithmetic than resizing each crop (whole frames are multiplied), but a handful of
    batched products per call whatever the number and sizes of the boxes."""
    b, channels, height, width = frames.shape
    top, left, box_h, box_w = boxes.to(frames.device).T
    rows = _resampling_weights(top, box_h, size, height).view(repeats, b, size, height)
    cols = _resampling_weights(left, box_w, size, width).view(repeats, b, size, width)
    x = frames.float().div_(255.0).view(b, channels * height, width)
    # Columns first, every crop of a frame in one product: [B, C*H, W] @ [B, W, R*S].
    x = x @ cols.permute(1, 3, 0, 2).reshape(b, width, repeats * size)
    x = x.view(b, channels, height, repeats, size).permute(3, 0, 1, 2, 4)  # [R, B, C, H, S]
    out = rows.unsqueeze(2) @ x  # [R, B, 1, S, H] @ [R, B, C, H, S] -> [R, B, C, S, S]
    return out.reshape(repeats * b, channels, size, size).clamp_(0.0, 1.0)


def _resampling_weights(
    start: torch.Tensor, length: torch.Tensor, size: int, full: int
) -> torch.Tensor:
    """``[N, size, full]``: the weight of input pixel ``x`` in output pixel ``j`` when
    ``[start, start + length)`` of an axis of ``full`` pixels is resized to ``size``.

    Antialiased bicubic (a = -0.5), PIL's scheme: the kernel is stretched by the downscale
    factor, only pixels inside the interval count, and each row is normalised to sum 1.
    """
    start, length = start.float()[:, None, None], length.float()[:, None, None]
    scale = length / size
    stretch = scale.clamp(min=1.0)
    centre = torch.arange(size, device=start.device, dtype=torch.float32)[None, :, None]
    centre = start + (centre + 0.5) * scale  # [N, size, 1]
    pixel = torch.arange(full, device=start.device, dtype=torch.float32)[None, None, :]
    d = ((pixel + 0.5 - centre) / stretch).abs_()  # [N, size, full]
    a = -0.5
    near = ((a + 2) * d - (a + 3)) * d * d + 1  # |d| <= 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a  # 1 < |d| < 2
    weights = torch.where(d <= 1, near, far.masked_fill_(d >= 2, 0.0))
    weights.masked_fill_((pixel < start) | (pixel >= start + length), 0.0)
    return weights / weights.sum(-1, keepdim=True)


def _photometric(cfg: AugmentConfig, blur_p: float, solarize_p: float) -> nn.Sequential:
    """Flip, colour jitter, grayscale, blur, solarisation; steps with probability 0 are left
    out (kornia would still compute them)."""
    kernel = 2 * math.ceil(3 * cfg.blur_sigma[1]) + 1
    steps = [
        (cfg.flip_p, lambda p: K.RandomHorizontalFlip(p=p)),
        (cfg.color_jitter_p, lambda p: K.ColorJitter(*cfg.color_jitter, p=p)),
        (cfg.grayscale_p, lambda p: K.RandomGrayscale(p=p)),
        (
            blur_p,
            lambda p: K.RandomGaussianBlur(
                (kernel, kernel), cfg.blur_sigma, border_type="replicate", p=p
            ),
        ),
        (solarize_p, lambda p: K.RandomSolarize(thresholds=0.0, additions=0.0, p=p)),
    ]
    return nn.Sequential(*(make(p) for p, make in steps if p > 0))


class MultiCropAugmentation(nn.Module):
    """Turn a batch of frames into DINO's 2 global + ``local_crops`` local views.

    Args:
        cfg: Crop sizes, scales and probabilities.
    """

    def __init__(self, cfg: AugmentConfig) -> None:
        super().__init__()
        self.cfg = cfg
        blur_first, blur_second, blur_local = cfg.blur_p
        self.global_first = _photometric(cfg, blur_first, 0.0)
        self.global_second = _photometric(cfg, blur_second, cfg.solarize_p)
        self.local = _photometric(cfg, blur_local, 0.0)
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std).view(1, 3, 1, 1), persistent=False)

    @property
    def num_crops(self) -> int:
        """Views per sample: 2 global plus the local ones."""
        return 2 + self.cfg.local_crops

    @torch.no_grad()
    def forward(self, frames: torch.Tensor, sizes: torch.Tensor) -> list[torch.Tensor]:
        """Augment a batch.

        Args:
            frames: uint8 ``[B, T, 3, H, W]`` (padded frames; ``T`` = 2 gives the second
                global view its own frame, ``T`` = 1 takes every view from the same frame).
            sizes: int64 ``[B, 2]`` real ``(height, width)`` of each frame.

        Returns:
            ``2 + local_crops`` float32 tensors, normalised: two ``[B, 3, G, G]`` global views,
            then ``[B, 3, L, L]`` local views (G, L: the configured crop sizes).
        """
        if frames.dtype != torch.uint8 or frames.dim() != 5 or frames.shape[2] != 3:
            raise InputError(
                f"frames must be uint8 [B, T, 3, H, W]; got {frames.dtype} {tuple(frames.shape)}"
            )
        cfg = self.cfg
        b = frames.shape[0]
        first = frames[:, 0]
        second = frames[:, -1]
        views = []
        for source, pipeline in ((first, self.global_first), (second, self.global_second)):
            boxes = sample_crop_boxes(sizes, cfg.global_crop_scale, cfg.crop_ratio)
            crops = resized_crops(source, boxes, cfg.global_crop_size)
            views.append(self._normalise(pipeline(crops)))
        if cfg.local_crops:
            repeated = sizes.repeat(cfg.local_crops, 1)
            boxes = sample_crop_boxes(repeated, cfg.local_crop_scale, cfg.crop_ratio)
            # Crop-major order: row l * B + b is local crop l of sample b.
            crops = resized_crops(first, boxes, cfg.local_crop_size, repeats=cfg.local_crops)
            views.extend(self._normalise(self.local(crops)).split(b))
        return views

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean) / self.std).contiguous()
