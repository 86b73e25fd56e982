"""Patch features (and class-token attention) from a ViT backbone.

The forward pass is written out block by block over the timm modules so that the position
embeddings can be resampled exactly as the official DINO code does, and so that the last
block can also return its class-token attention without a second pass.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinotrack.backbones import BackboneSpec
from dinotrack.config import RESIZE_RULES, resolve_precision


def network_input_size(
    height: int, width: int, short_side: int, patch_size: int, rule: str = "aspect"
) -> tuple[int, int]:
    """Size ``(h, w)`` a frame of ``height x width`` is resized to before the backbone.

    Args:
        height: Frame height in pixels.
        width: Frame width in pixels.
        short_side: Target length of the shorter side (480 in the DINO protocol).
        patch_size: Patch size of the backbone.
        rule: ``"official"``: the short side becomes ``short_side`` and the long side is
            floored to a multiple of 64, as the official DINO script does (aspect ratio is
            only approximately kept). ``"aspect"``: both sides are scaled by the same factor
            and rounded to the nearest multiple of the patch size.

    Returns:
        ``(h, w)``, both multiples of ``patch_size``.
    """
    if rule not in RESIZE_RULES:
        raise ValueError(f"unknown resize rule {rule!r}; choose one of {RESIZE_RULES}")
    if short_side < patch_size:
        raise ValueError(f"short side {short_side} is smaller than the patch size {patch_size}")
    if rule == "official":
        if height > width:
            h, w = int((short_side * height / width) // 64 * 64), short_side
        else:
            h, w = short_side, int((short_side * width / height) // 64 * 64)
        # The official script assumes 64 is a multiple of the patch; keep that true for 14.
        return h // patch_size * patch_size, w // patch_size * patch_size
    scale = short_side / min(height, width)
    h = max(patch_size, round(height * scale / patch_size) * patch_size)
    w = max(patch_size, round(width * scale / patch_size) * patch_size)
    return h, w


def resample_pos_embed_dino(pos_embed: Tensor, grid: tuple[int, int]) -> Tensor:
    """Resample ViT position embeddings to a patch grid with the official DINO rule.

    DINO interpolates the square grid of patch embeddings bicubically with scale factor
    ``(g + 0.1) / sqrt(N)`` per axis (not with an output size), which places samples slightly
    differently from timm's resampling.

    Args:
        pos_embed: ``[1, 1 + N, D]`` embeddings, class token first, ``N`` a square.
        grid: Target ``(gh, gw)``.

    Returns:
        ``[1, 1 + gh * gw, D]``.
    """
    n = pos_embed.shape[1] - 1
    side = int(math.isqrt(n))
    if side * side != n:
        raise ValueError(f"position embedding of {n} patches is not a square grid")
    gh, gw = grid
    if (gh, gw) == (side, side):
        return pos_embed
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
    dim = pos_embed.shape[-1]
    patch_pos = patch_pos.reshape(1, side, side, dim).permute(0, 3, 1, 2).float()
    patch_pos = F.interpolate(
        patch_pos,
        scale_factor=((gh + 0.1) / side, (gw + 0.1) / side),
        mode="bicubic",
        align_corners=False,
        recompute_scale_factor=False,
    )
    if patch_pos.shape[-2:] != (gh, gw):
        raise RuntimeError(f"position embedding resampled to {patch_pos.shape[-2:]}, not {grid}")
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, gh * gw, dim).to(pos_embed.dtype)
    return torch.cat([cls_pos, patch_pos], dim=1)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None -> CUDA if available, else CPU; other values as given.

    Raises:
        ValueError: Not a device name, a device that holds no data (``meta``) or that
            dinotrack does not run on, or CUDA asked for but not available.
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"unknown device {str(device)[:60]!r}; use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(
            f"device {str(device)!r} cannot run dinotrack; use auto, cpu, cuda or cuda:N"
        )
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but CUDA is not available here")
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None = full fp32; ``"auto"`` as
    :func:`dinotrack.config.resolve_precision` says)."""
    precision = resolve_precision(precision, device)
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


class FeatureExtractor:
    """Runs a backbone on frames and returns patch features.

    Args:
        net: A timm ``VisionTransformer`` (from :func:`dinotrack.backbones.load_backbone`).
        spec: Its registry entry (patch size, mean/std, position-embedding rule).
        device: Where to run.
        precision: ``"auto"`` (see :func:`dinotrack.config.resolve_precision`), ``"fp32"``,
            ``"bf16"`` or ``"fp16"``.
        pos_embed: ``"dino"`` (official DINO resampling), ``"timm"``, or None for the
            backbone's own rule.
    """

    def __init__(
        self,
        net: nn.Module,
        spec: BackboneSpec,
        device: str | torch.device = "cpu",
        precision: str = "auto",
        pos_embed: str | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.net = net.to(self.device).eval()
        self.spec = spec
        self.patch_size = spec.patch_size
        self.dtype = autocast_dtype(precision, self.device)
        self.pos_embed_rule = pos_embed or spec.pos_embed
        if self.pos_embed_rule not in ("dino", "timm"):
            raise ValueError(f"unknown position embedding rule {self.pos_embed_rule!r}")
        if getattr(net, "reg_token", None) is not None or getattr(net, "no_embed_class", False):
            self.pos_embed_rule = "timm"  # the DINO rule is defined for class-token-only ViTs
        self.num_prefix = int(getattr(net, "num_prefix_tokens", 1))
        self.mean = torch.tensor(spec.mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(spec.std, device=self.device).view(1, 3, 1, 1)
        self._pos_cache: dict[tuple[int, int], Tensor] = {}

    @property
    def embed_dim(self) -> int:
        """Channels ``C`` of the patch features."""
        return int(self.net.embed_dim)

    def preprocess(
        self, frames: np.ndarray | Sequence[np.ndarray] | Tensor, size: tuple[int, int]
    ) -> Tensor:
        """Frames to normalised network input.

        Args:
            frames: RGB uint8 frames, ``[B, H, W, 3]`` (array, tensor or list of ``[H, W, 3]``).
            size: Network input ``(h, w)``, multiples of the patch size.

        Returns:
            ``[B, 3, h, w]`` float32 on the extractor's device, normalised with the backbone's
            mean and std. Resizing is bilinear without antialiasing (as OpenCV's default).
        """
        if isinstance(frames, (list, tuple)):
            frames = np.stack(frames)
        x = torch.as_tensor(frames).to(self.device, non_blocking=True)
        if x.dim() != 4 or x.shape[-1] != 3:
            raise ValueError(f"expected RGB frames [B, H, W, 3], got shape {tuple(x.shape)}")
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)
        return (x - self.mean) / self.std

    def _pos_embed(self, grid: tuple[int, int]) -> Tensor:
        if grid not in self._pos_cache:
            self._pos_cache[grid] = resample_pos_embed_dino(self.net.pos_embed, grid)
        return self._pos_cache[grid]

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @torch.inference_mode()
    def forward(self, images: Tensor, attention: bool = False) -> tuple[Tensor, Tensor | None]:
        """Patch features, and optionally the last block's class-token attention.

        Args:
            images: ``[B, 3, h, w]`` normalised images, ``h`` and ``w`` multiples of the patch.
            attention: Also return the class token's attention to every patch in the last
                block (every other block keeps fused attention).

        Returns:
            ``(features, attn)``: features ``[B, C, h/p, w/p]`` float32 (last block's tokens
            after the final norm, class and register tokens removed); attn
            ``[B, heads, h/p, w/p]`` float32, each head a distribution over patches (sums to
            1 over patches together with the prefix tokens' share), or None.
        """
        net = self.net
        with self._autocast():
            x = net.patch_embed(images)  # [B, gh, gw, C] (dynamic image size)
            batch, gh, gw, dim = x.shape
            if self.pos_embed_rule == "dino":
                pos = self._pos_embed((gh, gw))
                x = x.reshape(batch, gh * gw, dim)
                x = torch.cat([net.cls_token.expand(batch, -1, -1), x], dim=1) + pos
            else:
                x = net._pos_embed(x)
            x = net.norm_pre(net.patch_drop(x))
            blocks = list(net.blocks)
            for blk in blocks[:-1] if attention else blocks:
                x = blk(x)
            attn = None
            if attention:
                x, attn = _block_with_cls_attention(blocks[-1], x)
            x = net.norm(x)
        feats = x[:, self.num_prefix :].float().reshape(batch, gh, gw, dim).permute(0, 3, 1, 2)
        if attn is not None:
            attn = attn[..., self.num_prefix :].float().reshape(batch, -1, gh, gw)
        return feats.contiguous(), attn

    def __call__(
        self, frames: np.ndarray | Sequence[np.ndarray] | Tensor, size: tuple[int, int]
    ) -> Tensor:
        """Shortcut: ``forward(preprocess(frames, size))[0]``, ``[B, C, h/p, w/p]``."""
        return self.forward(self.preprocess(frames, size))[0]


def _block_with_cls_attention(blk: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """Run a timm ViT block and also return its class-token attention ``[B, heads, N]``.

    The block output uses fused attention; the class token's attention row is computed from
    the same queries and keys (one extra ``1 x N`` product per head).
    """
    attn_mod = blk.attn
    y = blk.norm1(x)
    batch, n_tok, _ = y.shape
    qkv = attn_mod.qkv(y).reshape(batch, n_tok, 3, attn_mod.num_heads, attn_mod.head_dim)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn_mod.q_norm(q), attn_mod.k_norm(k)
    out = F.scaled_dot_product_attention(q, k, v)
    cls_attn = ((q[:, :, :1].float() * attn_mod.scale) @ k.float().transpose(-2, -1)).softmax(-1)
    out = out.transpose(1, 2).reshape(batch, n_tok, -1)
    out = attn_mod.proj(attn_mod.norm(out))
    x = x + blk.drop_path1(blk.ls1(out))
    x = x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))
    return x, cls_attn[:, :, 0]
