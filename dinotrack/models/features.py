"""Patch features (and class-token attention) from a ViT backbone.

Two paths, chosen by how the backbone places its tokens:

* ViTs with absolute position embeddings under the official rule (``pos_embed="dino"``: DINO,
  and DINOv2, whose official code resamples the same way) run the timm modules block by
  block, so that the embeddings are resampled exactly as the official code does (timm
  resamples to an output size with antialiasing, which places samples differently);
* every other backbone (DINOv3's RoPE ViTs, ``pos_embed="timm"``) runs timm's generic
  ``forward_intermediates``; DINOv3's rotary embedding at any grid is timm's, checked against
  the official formula in the tests.

Both return the last block's normalised patch tokens (class and register tokens dropped) and,
on request, the last block's class-token attention from the same pass.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinotrack.config import RESIZE_RULES, resolve_precision
from dinotrack.errors import InputError, UnavailableError
from dinotrack.models.registry import BackboneSpec


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
        raise InputError(f"unknown resize rule {rule!r}; choose one of {RESIZE_RULES}")
    if short_side < patch_size:
        raise InputError(f"short side {short_side} is smaller than the patch size {patch_size}")
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


def resample_pos_embed_dino(
    pos_embed: Tensor, grid: tuple[int, int], num_prefix: int = 1
) -> Tensor:
    """Resample ViT position embeddings to a patch grid with the official DINO rule.

    DINO (and DINOv2, with ``interpolate_offset=0.1`` and no antialiasing) interpolates the
    square grid of patch embeddings bicubically with scale factor ``(g + 0.1) / sqrt(N)`` per
    axis (not with an output size), which places samples slightly differently from timm's
    resampling.

    Args:
        pos_embed: ``[1, P + N, D]`` embeddings: ``P`` prefix entries (1 = the class token's;
            0 for timm's ``no_embed_class`` models such as DINOv2 with registers), then ``N``
            patches, a square grid.
        grid: Target ``(gh, gw)``.
        num_prefix: ``P``.

    Returns:
        ``[1, P + gh * gw, D]``.
    """
    n = pos_embed.shape[1] - num_prefix
    side = int(math.isqrt(n))
    if side * side != n:
        raise InputError(f"position embedding of {n} patches is not a square grid")
    gh, gw = grid
    if (gh, gw) == (side, side):
        return pos_embed
    cls_pos, patch_pos = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
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


def resolve_device(device: str | torch.device | None, local_rank: int = 0) -> torch.device:
    """The device a name asks for: ``"auto"``/None is CUDA when available, else the CPU;
    ``"auto"`` and a bare ``"cuda"`` take GPU ``local_rank`` (one GPU per process under
    torchrun); ``"cpu"``, ``"cuda:N"`` and ``"mps"`` are taken as given.

    Raises:
        InputError: Not a device name, or a device that dinotrack does not run on
            (``meta``...); ``parameter`` is ``"device"``.
        UnavailableError: CUDA was asked for but is not available, or GPU N does not exist.
    """
    if device is None or str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(
            f"device={str(device)[:60]!r} is not a device; use auto, cpu, cuda or cuda:N",
            parameter="device",
        ) from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise InputError(
            f"device={str(dev)!r} cannot run dinotrack; use auto, cpu, cuda or cuda:N",
            parameter="device",
        )
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UnavailableError(
                f"device={str(device)!r} asks for CUDA, which is not available here; use cpu",
                parameter="device",
            )
        index = local_rank if dev.index is None else dev.index
        if index >= torch.cuda.device_count():
            raise UnavailableError(
                f"GPU {index} does not exist ({torch.cuda.device_count()} visible); "
                "start at most one process per GPU",
                parameter="device",
            )
        dev = torch.device("cuda", index)
    return dev


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None = full fp32; ``"auto"`` as
    :func:`dinotrack.config.resolve_precision` says)."""
    precision = resolve_precision(precision, device)
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


class FeatureExtractor:
    """Runs a backbone on frames and returns patch features.

    Args:
        net: A timm ``VisionTransformer`` (from :func:`dinotrack.models.build.load_backbone`).
        spec: Its registry entry (patch size, mean/std, position-embedding rule).
        device: Where to run.
        precision: ``"auto"`` (see :func:`dinotrack.config.resolve_precision`), ``"fp32"``,
            ``"bf16"`` or ``"fp16"``.
        pos_embed: ``"dino"`` (official DINO resampling), ``"timm"``, or None for the
            backbone's own rule. Backbones without absolute position embeddings (DINOv3's
            RoPE) ignore it.
        compile: Compile the backbone's blocks with ``torch.compile`` (same results, up to
            floating-point rounding; the first frames of each new input size are slow).
    """

    def __init__(
        self,
        net: nn.Module,
        spec: BackboneSpec,
        device: str | torch.device = "cpu",
        precision: str = "auto",
        pos_embed: str | None = None,
        compile: bool = False,
    ) -> None:
        self.device = resolve_device(device)
        self.net = net.to(self.device).eval()
        self.spec = spec
        self.patch_size = spec.patch_size
        self.dtype = autocast_dtype(precision, self.device)
        self.pos_embed_rule = pos_embed or spec.pos_embed
        if self.pos_embed_rule not in ("dino", "timm"):
            raise InputError(f"unknown position embedding rule {self.pos_embed_rule!r}")
        if getattr(net, "pos_embed", None) is None:
            self.pos_embed_rule = "timm"  # nothing to resample (rotary position embeddings)
        self.num_prefix = int(getattr(net, "num_prefix_tokens", 1))
        # Prefix tokens (class, registers) that carry a position embedding: timm's
        # no_embed_class models (DINOv2 with registers) add positions to the patches only.
        self.pos_prefix = 0 if getattr(net, "no_embed_class", False) else self.num_prefix
        if compile:
            for blk in self.net.blocks:
                blk.compile()
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
            raise InputError(f"expected RGB frames [B, H, W, 3], got shape {tuple(x.shape)}")
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)
        return (x - self.mean) / self.std

    def _pos_embed(self, grid: tuple[int, int]) -> Tensor:
        if grid not in self._pos_cache:
            self._pos_cache[grid] = resample_pos_embed_dino(
                self.net.pos_embed, grid, self.pos_prefix
            )
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
        with self._autocast():
            if self.pos_embed_rule == "dino":
                x, attn = self._forward_dino_rule(images, attention)
            else:
                x, attn = self._forward_intermediates(images, attention)
        batch, gh, gw = images.shape[0], *self._grid(images)
        feats = x.float().reshape(batch, gh, gw, -1).permute(0, 3, 1, 2)
        if attn is not None:
            attn = attn[..., self.num_prefix :].float().reshape(batch, -1, gh, gw)
        return feats.contiguous(), attn

    def grid_size(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """Patch grid ``(h/p, w/p)`` of a network input of ``input_size`` ``(h, w)``."""
        return input_size[0] // self.patch_size, input_size[1] // self.patch_size

    def _grid(self, images: Tensor) -> tuple[int, int]:
        return self.grid_size(tuple(images.shape[-2:]))

    def _forward_dino_rule(self, images: Tensor, attention: bool) -> tuple[Tensor, Tensor | None]:
        """Patch tokens ``[B, N, C]`` with the official position resampling, and optionally
        the class token's attention row ``[B, heads, prefix + N]``."""
        net = self.net
        x = net.patch_embed(images)  # [B, gh, gw, C] (dynamic image size)
        batch, gh, gw, dim = x.shape
        pos = self._pos_embed((gh, gw))
        x = x.reshape(batch, gh * gw, dim)
        prefix = [t.expand(batch, -1, -1) for t in (net.cls_token, net.reg_token) if t is not None]
        if self.pos_prefix == 0:
            x = torch.cat([*prefix, x + pos], dim=1)
        else:
            x = torch.cat([*prefix, x], dim=1) + pos
        x = net.norm_pre(net.patch_drop(x))
        blocks = list(net.blocks)
        for blk in blocks[:-1] if attention else blocks:
            x = blk(x)
        attn = None
        if attention:
            x, attn = _block_with_cls_attention(blocks[-1], x)
        x = net.norm(x)
        return x[:, self.num_prefix :], attn

    def _forward_intermediates(
        self, images: Tensor, attention: bool
    ) -> tuple[Tensor, Tensor | None]:
        """The same through timm's ``forward_intermediates`` (any timm ViT family); the
        attention row is computed from the last block's input, caught by a forward pre-hook."""
        net = self.net
        caught: dict[str, Tensor | None] = {}

        def catch(module: nn.Module, args: tuple, kwargs: dict) -> None:
            caught["x"], caught["rope"] = args[0], kwargs.get("rope")

        last = net.blocks[-1]
        handle = last.register_forward_pre_hook(catch, with_kwargs=True) if attention else None
        try:
            (x,) = net.forward_intermediates(
                images, indices=1, norm=True, output_fmt="NLC", intermediates_only=True
            )
        finally:
            if handle is not None:
                handle.remove()
        attn = _cls_attention(last, caught["x"], caught["rope"]) if attention else None
        return x, attn

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


def _cls_attention(blk: nn.Module, x: Tensor, rope: Tensor | None = None) -> Tensor:
    """The class token's attention row ``[B, heads, N]`` in timm block ``blk`` with input
    ``[B, N, C]``: timm's ``Attention`` (ViT) or ``EvaAttention`` (with rotary embeddings
    ``rope`` on the patch tokens, as DINOv3)."""
    from timm.layers import apply_rot_embed_cat

    attn_mod = blk.attn
    y = blk.norm1(x)
    batch, n_tok, _ = y.shape
    if getattr(attn_mod, "qkv", None) is None:
        q, k = attn_mod.q_proj(y), attn_mod.k_proj(y)
    else:
        bias = attn_mod.qkv.bias
        if getattr(attn_mod, "q_bias", None) is not None:
            bias = torch.cat((attn_mod.q_bias, attn_mod.k_bias, attn_mod.v_bias))
        q, k, _ = F.linear(y, attn_mod.qkv.weight, bias).chunk(3, dim=-1)
    q = attn_mod.q_norm(q.reshape(batch, n_tok, attn_mod.num_heads, -1).transpose(1, 2))
    k = attn_mod.k_norm(k.reshape(batch, n_tok, attn_mod.num_heads, -1).transpose(1, 2))
    if rope is not None:  # the class token is a prefix token: only the keys of patches turn
        npt = attn_mod.num_prefix_tokens
        half = getattr(attn_mod, "rotate_half", False)
        turned = apply_rot_embed_cat(k[:, :, npt:], rope, half=half).type_as(k)
        k = torch.cat([k[:, :, :npt], turned], dim=2)
    logits = (q[:, :, :1].float() * attn_mod.scale) @ k.float().transpose(-2, -1)
    return logits.softmax(-1)[:, :, 0]
