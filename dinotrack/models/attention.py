"""Class-token attention of the last ViT block: maps and mass thresholds.

DINO's class token attends, in the last block, to the main objects of the scene (Caron et al.
2021, Figure 1). :meth:`dinotrack.models.features.FeatureExtractor.forward` returns that attention
from the same forward pass as the patch features; this module turns it into maps per head and
their mean, each a probability distribution over the patches (:func:`normalize_attention`),
upsampled to the frame (:func:`upsample_attention`), and the smallest set of patches holding a
given share of a map's mass, 60% by default as in the paper's figures (:func:`mass_threshold`).
Pictures of the maps are drawn by :mod:`dinotrack.results.colour_map`; the annotation-free
start mask built on them is :mod:`dinotrack.tracking.autostart`.

About the mass: the softmax of the class token's query runs over every token, the prefix
tokens (the class token itself, and any register tokens) included, so the patch part of a head
sums to 1 minus the prefix tokens' share, a different amount per head and per image. Every map
here is renormalised over the patches first, so "60% of the mass" means 60% of the attention
given to patches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dinotrack.config import DEFAULT_MASS, UPSAMPLE_MODES
from dinotrack.errors import InputError


def normalize_attention(attn: Tensor) -> Tensor:
    """Renormalises attention maps so that each sums to 1 over its patches.

    Args:
        attn: ``[..., h, w]`` non-negative attention of the class token to the patches (e.g.
            ``[B, heads, h/p, w/p]`` from ``FeatureExtractor.forward(..., attention=True)``),
            whose sums are below 1 because the prefix tokens took the rest.

    Returns:
        ``[..., h, w]`` float32, each map divided by its sum over the last two dimensions.
    """
    attn = attn.float()
    total = attn.sum(dim=(-2, -1), keepdim=True)
    return attn / total.clamp_min(torch.finfo(torch.float32).tiny)


def mass_threshold(attn: Tensor, mass: float = DEFAULT_MASS) -> Tensor:
    """The smallest set of patches holding at least ``mass`` of each map's attention.

    Patches are taken from the most attended down until their summed share reaches
    ``mass``; no smaller set can hold as much. Shares are computed in float64 after
    renormalising each map over its patches (see the module docstring). Among patches of
    exactly equal attention at the cut, the one earlier in raster order is kept.

    Args:
        attn: ``[..., h, w]`` non-negative attention maps (any scale).
        mass: Share of the mass to keep, in (0, 1].

    Returns:
        ``[..., h, w]`` bool, True for the kept patches.

    Raises:
        ValueError: ``mass`` outside (0, 1], or negative or all-zero maps.
    """
    if not 0.0 < mass <= 1.0:
        raise InputError(f"the attention mass to keep must be in (0, 1], got {mass}")
    flat = attn.detach().flatten(-2).double()
    if flat.shape[-1] == 0:
        raise InputError("cannot threshold an empty attention map")
    if (flat < 0).any() or not (flat.sum(-1) > 0).all():
        raise InputError("attention maps must be non-negative with a positive sum")
    flat = flat / flat.sum(-1, keepdim=True)
    values, order = flat.sort(dim=-1, descending=True, stable=True)
    cumulative = values.cumsum(-1)
    before = torch.cat([torch.zeros_like(cumulative[..., :1]), cumulative[..., :-1]], dim=-1)
    keep_sorted = before < mass  # a prefix: the patches needed before the mass is reached
    keep = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
    return keep.reshape(attn.shape)


def upsample_attention(attn: Tensor, size: tuple[int, int], mode: str = "nearest") -> Tensor:
    """Resizes patch-level maps to an image size.

    Args:
        attn: ``[..., h, w]`` maps.
        size: Output ``(H, W)``, usually the frame's.
        mode: ``"nearest"`` (each patch a flat block, as the DINO figures; an output pixel
            takes the patch under its centre, as :func:`dinotrack.io.masks.resize_mask` does
            except maybe for a centre exactly on a patch border) or ``"bilinear"`` (smooth,
            ``align_corners=False``).

    Returns:
        ``[..., H, W]`` float32. Values are resampled, not renormalised.

    Raises:
        ValueError: Unknown mode.
    """
    if mode not in UPSAMPLE_MODES:
        raise InputError(f"unknown upsampling mode {mode!r}; choose one of {UPSAMPLE_MODES}")
    lead, grid = attn.shape[:-2], attn.shape[-2:]
    flat = attn.float().reshape(-1, 1, *grid)
    if mode == "nearest":  # the source pixel under each output pixel's centre, as PIL
        out = F.interpolate(flat, size=tuple(size), mode="nearest-exact")
    else:
        out = F.interpolate(flat, size=tuple(size), mode="bilinear", align_corners=False)
    return out.reshape(*lead, *size)
