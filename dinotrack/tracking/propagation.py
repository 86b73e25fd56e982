"""Label propagation through patch-feature affinity (pure tensor functions, no I/O).

The DINO paper's video protocol: every target patch looks at the source patches of the context
frames (the first frame and the previous few) inside a square window of ``radius`` patches
around its own position, keeps the ``topk`` most similar ones over all context frames jointly,
weights them by ``exp(cos / temperature)`` normalised to sum 1, and takes the weighted sum of
their soft labels.

The official implementation builds a dense ``N x N`` affinity per context frame and masks it
with the window; here each block of ``tile x tile`` targets is compared with the region of
sources that its windows can reach, so memory is ``O(context x N x (2 r + tile)^2 / tile^2)``
rather than ``O(context x N^2)``, and the result is the same.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dinotrack.config import (
    CPU_TILE,
    N_LAST_FRAMES,
    RADIUS,
    TEMPERATURE,
    TOPK,
    check_int,
    check_temperature,
)
from dinotrack.errors import InputError

PRODUCT_LAYOUTS = ("auto", "per_row", "per_run")
"""How :func:`propagate_labels` batches its similarity products (speed only): ``per_row``
(one product per row of target tiles, the CPU's default), ``per_run`` (one product over all
the rows, padding tiles included: fewer kernel launches, a GPU's default) or ``auto``."""


def one_hot_labels(ids: Tensor, num_channels: int) -> Tensor:
    """One-hot soft labels from channel indices.

    Args:
        ids: ``[h, w]`` integer channel indices in ``[0, num_channels)``.
        num_channels: Number of label channels ``K`` (background included).

    Returns:
        ``[K, h, w]`` float32 tensor of zeros and ones.
    """
    return F.one_hot(ids.long(), num_channels).permute(2, 0, 1).float()


def _to_tiles(x: Tensor, tile: int, halo: int) -> Tensor:
    """``[T, C, h, w]`` -> ``[n_y + 2 halo, n_x + 2 halo, T, tile*tile, C]``, zero-padded."""
    n_ctx, channels, h, w = x.shape
    n_y, n_x = -(-h // tile), -(-w // tile)
    p = halo * tile
    x = F.pad(x, (p, n_x * tile - w + p, p, n_y * tile - h + p))
    x = x.view(n_ctx, channels, n_y + 2 * halo, tile, n_x + 2 * halo, tile)
    x = x.permute(2, 4, 0, 3, 5, 1)  # [ty, tx, T, y, x, C]
    return x.reshape(n_y + 2 * halo, n_x + 2 * halo, n_ctx, tile * tile, channels)


def _window_mask(tile: int, halo: int, radius: int, device: torch.device) -> Tensor:
    """``[tile², (2 halo + 1)², tile²]`` bool: source cells of each neighbouring tile that lie
    in the window of each target cell of the centre tile."""
    cells = torch.arange(tile, device=device)
    offsets = torch.arange(-halo, halo + 1, device=device) * tile
    # 1-D distance from target cell a to source cell b of the neighbour tile at offset o.
    dist = offsets[None, :, None] + cells[None, None, :] - cells[:, None, None]  # [a, o, b]
    near = dist.abs() <= radius
    mask = near[:, None, :, None, :, None] & near[None, :, None, :, None, :]
    # [ay, ax, oy, ox, by, bx] -> [target cell, neighbour tile, source cell]
    return mask.reshape(tile * tile, (2 * halo + 1) ** 2, tile * tile)


def propagate_labels(
    target_feats: Tensor,
    context_feats: Tensor,
    context_labels: Tensor,
    *,
    radius: int = RADIUS,
    topk: int = TOPK,
    temperature: float = TEMPERATURE,
    tile: int = CPU_TILE,
    normalized: bool = False,
    chunk_bytes: int = 256 * 2**20,
    layout: str = "auto",
) -> Tensor:
    """Propagate soft labels from context frames to a target frame.

    For target patch ``q`` with candidate sources ``s`` (every context patch whose row and
    column are each within ``radius`` of ``q``'s), the affinity is
    ``a(q, s) = exp(cos(f_q, f_s) / temperature)``; the ``topk`` largest over all context frames
    are kept, normalised to sum 1, and the output is ``sum_s a(q, s) * label(s)``.

    ``topk`` is clamped to the largest number of candidates a target can have,
    ``T * min(2 radius + 1, h) * min(2 radius + 1, w)``, so any ``topk >= 1`` works and a large
    one keeps every candidate. Targets near the border have fewer candidates than that; the
    missing ones score ``-inf`` and get weight 0. Every target has at least ``T`` candidates
    (its own position in each context frame), so its weights always sum to 1.

    Args:
        target_feats: ``[C, h, w]`` features of the target frame.
        context_feats: ``[T, C, h, w]`` features of the context frames.
        context_labels: ``[T, K, h, w]`` float soft labels of the context frames.
        radius: Half-side of the square search window, in patches (an integer). A negative
            value searches the whole frame.
        topk: Number of source patches kept per target patch, an integer >= 1 (clamped as
            said above).
        temperature: Softmax temperature of the affinity, finite and > 0.
        tile: Side of the blocks of target patches processed together, >= 1 (speed/memory
            only; results do not depend on it).
        normalized: Whether the features are already L2-normalised along ``C``.
        chunk_bytes: Rough bound on the similarity scores held at once (memory only).
        layout: How the similarity products are batched, one of :data:`PRODUCT_LAYOUTS`
            (speed only; ``"auto"``: :func:`product_layout` of the features' device).

    Returns:
        ``[K, h, w]`` float32 soft labels of the target frame; each position's labels are a
        convex combination of source labels.

    Raises:
        ValueError: Tensors of the wrong dimensions or mismatched shapes, or a setting out of
            range (e.g. ``topk < 1``, a NaN or infinite temperature, an unknown layout).
        TypeError: ``radius``, ``topk`` or ``tile`` not an integer, or ``temperature`` not a
            number.
    """
    _check_settings(radius, topk, temperature, tile)
    if layout not in PRODUCT_LAYOUTS:
        raise InputError(f"layout must be one of {PRODUCT_LAYOUTS}, got {layout!r}")
    if target_feats.dim() != 3 or context_feats.dim() != 4 or context_labels.dim() != 4:
        raise InputError(
            "expected target [C, h, w], context features [T, C, h, w] and context labels "
            f"[T, K, h, w]; got {tuple(target_feats.shape)}, {tuple(context_feats.shape)}, "
            f"{tuple(context_labels.shape)}"
        )
    n_ctx, channels, h, w = context_feats.shape
    if target_feats.shape != (channels, h, w) or context_labels.shape[::2] != (n_ctx, h):
        raise InputError(
            f"shape mismatch: target {tuple(target_feats.shape)}, context features "
            f"{tuple(context_feats.shape)}, context labels {tuple(context_labels.shape)}"
        )
    if radius < 0 or radius >= max(h, w):
        radius = max(h, w)  # the window covers the whole frame
    # No target has more candidates than a full window (fewer near the border): beyond that,
    # topk would only add -inf scores, and torch.topk fails past the candidates it is given.
    topk = min(topk, n_ctx * min(2 * radius + 1, h) * min(2 * radius + 1, w))
    if not normalized:
        target_feats = F.normalize(target_feats.float(), dim=0)
        context_feats = F.normalize(context_feats.float(), dim=1)
    tile = max(1, min(tile, h, w))
    k_classes = context_labels.shape[1]
    halo = -(-radius // tile)  # neighbouring tiles a window can reach on each side
    n_y, n_x = -(-h // tile), -(-w // tile)
    grid_y, grid_x = n_y + 2 * halo, n_x + 2 * halo
    n_nb, cells = (2 * halo + 1) ** 2, tile * tile

    # Everything is cut into tiles on one padded grid, flattened row-major. The neighbour of
    # tile q at offset (dy, dx) is then tile q + dy * grid_x + dx, so for a run of target
    # tiles and one offset the source tiles are a contiguous run too: one batched product.
    keys = _to_tiles(context_feats.float(), tile, halo).view(grid_y * grid_x, -1, channels)
    values = _to_tiles(context_labels.float(), tile, halo).view(grid_y * grid_x, -1, k_classes)
    inside = _to_tiles(context_feats.new_ones(1, 1, h, w), tile, halo) > 0
    inside = inside.view(grid_y * grid_x, cells)
    queries = _to_tiles(target_feats.float()[None], tile, halo).view(grid_y * grid_x, cells, -1)
    window = _window_mask(tile, halo, radius, keys.device).transpose(0, 1)  # [n_nb, t², t²]
    offsets = [dy * grid_x + dx for dy in range(-halo, halo + 1) for dx in range(-halo, halo + 1)]
    offsets_t = torch.tensor(offsets, device=keys.device)

    out = keys.new_empty(n_y * n_x, cells, k_classes)  # the real tiles only, row-major
    if layout == "auto":
        layout = product_layout(keys.device)
    per_row = layout == "per_row"
    # Scores held per row of target tiles (the products over whole runs also hold the padding
    # tiles' scores until the real ones are copied out).
    tiles_per_row = n_x if per_row else n_x + grid_x
    bytes_per_row = n_nb * tiles_per_row * cells * n_ctx * cells * 4
    rows = max(1, min(n_y, chunk_bytes // bytes_per_row))
    for r0 in range(0, n_y, rows):
        r1 = min(n_y, r0 + rows)
        starts = [(halo + r) * grid_x + halo for r in range(r0, r1)]  # first tile of each row
        n_q = (r1 - r0) * n_x
        first = torch.tensor(starts, device=keys.device)
        targets = (first[:, None] + torch.arange(n_x, device=keys.device)).flatten()  # [n_q]
        if per_row:
            # One product per row and offset: the padding tiles between rows are skipped.
            sim = keys.new_empty(n_nb, n_q, cells, n_ctx * cells)
            for j, off in enumerate(offsets):
                for i, a in enumerate(starts):
                    rows_out = sim[j, i * n_x : (i + 1) * n_x]
                    torch.bmm(queries[a : a + n_x], keys[a + off : a + off + n_x].mT, out=rows_out)
        else:
            # One product per offset over all the rows, padding tiles included, then the real
            # tiles picked out: 10x fewer kernel launches, for a few more flops and one copy.
            a0, a1 = starts[0], starts[-1] + n_x
            run = keys.new_empty(n_nb, a1 - a0, cells, n_ctx * cells)
            for j, off in enumerate(offsets):
                torch.bmm(queries[a0:a1], keys[a0 + off : a1 + off].mT, out=run[j])
            sim = run[:, targets - a0]
            del run
        sources = offsets_t[:, None] + targets[None, :]  # [n_nb, n_q] source tile per offset
        # Candidates outside the frame or outside the target's window never win.
        valid = inside[sources][:, :, None, None, :] & window[:, None, :, None, :]
        sim.view(n_nb, n_q, cells, n_ctx, cells).masked_fill_(~valid, float("-inf"))
        cand = sim.permute(1, 2, 0, 3).reshape(n_q, cells, -1)  # [n_q, t², n_nb * T * t²]
        top_val, top_idx = cand.topk(topk, dim=-1)  # [n_q, t², k]
        del sim, cand
        # exp(c / T) normalised to sum 1 == softmax(c / T) over the kept candidates.
        weights = torch.softmax(top_val / temperature, dim=-1)
        labels = values[sources].transpose(0, 1).reshape(n_q, -1, k_classes)
        picked = torch.gather(labels, 1, top_idx.view(n_q, -1, 1).expand(-1, -1, k_classes))
        picked = picked.view(n_q, cells, topk, k_classes)
        out[r0 * n_x : r1 * n_x] = (weights.unsqueeze(-1) * picked).sum(2)

    out = out.view(n_y, n_x, tile, tile, k_classes)
    out = out.permute(4, 0, 2, 1, 3).reshape(k_classes, n_y * tile, n_x * tile)
    return out[:, :h, :w].contiguous()


def _check_settings(radius: int, topk: int, temperature: float, tile: int) -> None:
    check_int("radius", radius)
    check_int("topk", topk, minimum=1)
    check_temperature(temperature)
    check_int("tile", tile, minimum=1)


def product_layout(device: torch.device) -> str:
    """The product layout :func:`propagate_labels` uses on ``device`` by default.

    ``"per_row"`` on the CPU, where one product per row of target tiles is ~10 % faster than
    one over all rows (no padding tiles computed); ``"per_run"`` elsewhere, since on a GPU the
    many small products would cost more in kernel launches than they save.
    """
    return "per_row" if device.type == "cpu" else "per_run"


def labels_to_mask(
    soft_labels: Tensor, patch_size: int, out_size: tuple[int, int] | None = None
) -> Tensor:
    """Turn propagated soft labels into a hard label map, as the official script does.

    Soft labels are upsampled bilinearly by the patch size, each channel is min-max normalised
    (channels whose maximum is not positive are left as they are), the argmax is taken, and the
    result is resized to ``out_size`` with nearest-neighbour sampling.

    Args:
        soft_labels: ``[K, h, w]`` float soft labels.
        patch_size: Upsampling factor from the patch grid to the network input.
        out_size: ``(H, W)`` of the output, e.g. the original frame; None keeps
            ``(h * patch_size, w * patch_size)``.

    Returns:
        ``[H, W]`` int64 channel indices in ``[0, K)``.
    """
    up = F.interpolate(
        soft_labels[None].float(), scale_factor=patch_size, mode="bilinear", align_corners=False
    )[0]
    flat = up.flatten(1)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    span = hi - lo
    # Channels with a positive maximum are rescaled to [0, 1] (a constant one becomes 1).
    rescaled = torch.where(span > 0, (flat - lo) / span.clamp_min(1e-12), torch.ones_like(flat))
    scaled = torch.where(hi > 0, rescaled, flat)
    labels = _argmax_channels(scaled.view_as(up))
    if out_size is not None and tuple(out_size) != tuple(labels.shape):
        labels = F.interpolate(labels[None, None].float(), size=out_size, mode="nearest-exact")
        labels = labels[0, 0].long()
    return labels


def _argmax_channels(x: Tensor) -> Tensor:
    """``x.argmax(0)`` for ``[K, H, W]`` with few channels, as K elementwise passes (a
    reduction over the outer dimension is several times slower on the CPU). Ties go to the
    lower channel, as with ``argmax``."""
    best, index = x[0].clone(), torch.zeros(x.shape[1:], dtype=torch.long, device=x.device)
    for c in range(1, x.shape[0]):
        better = x[c] > best
        best = torch.where(better, x[c], best)
        index.masked_fill_(better, c)
    return index


class LabelPropagator:
    """The DINO protocol's memory: the first frame plus the last ``n_last_frames`` frames.

    Each :meth:`step` propagates labels to a new frame from that context and then pushes the
    frame's features and *soft* labels into the queue (the oldest frame drops out).

    The first frame is the first entry of a *permanent* memory: frames whose labels are given
    (prompts, corrections) join it through :meth:`add_permanent`, which keeps at most
    ``max_permanent`` of them (the first and the most recent). With the first frame alone the
    context is exactly the DINO protocol's.

    Args:
        first_feats: ``[C, h, w]`` features of the first frame.
        first_labels: ``[K, h, w]`` float soft labels of the first frame (one-hot usually).
        n_last_frames: Number of previous frames kept besides the first, >= 0.
        radius: Search window half-side in patches (negative: whole frame).
        topk: Sources kept per target patch, >= 1 (see :func:`propagate_labels`).
        temperature: Affinity temperature, finite and > 0.
        tile: Block size of the windowed computation (speed only), >= 1.
        max_permanent: Most frames the permanent memory holds, >= 1.

    Raises:
        ValueError, TypeError: As :func:`propagate_labels`, for a bad setting or
            ``n_last_frames``, or features and labels on different grids.
    """

    def __init__(
        self,
        first_feats: Tensor,
        first_labels: Tensor,
        *,
        n_last_frames: int = N_LAST_FRAMES,
        radius: int = RADIUS,
        topk: int = TOPK,
        temperature: float = TEMPERATURE,
        tile: int = CPU_TILE,
        max_permanent: int = 1,
    ) -> None:
        check_int("n_last_frames", n_last_frames, minimum=0)
        self.max_permanent = check_int("max_permanent", max_permanent, minimum=1)
        _check_settings(radius, topk, temperature, tile)
        self.permanent: list[tuple[Tensor, Tensor]] = []
        self.recent: deque[tuple[Tensor, Tensor]] = deque(maxlen=n_last_frames)
        self.n_last_frames = n_last_frames
        self.kwargs = dict(radius=radius, topk=topk, temperature=temperature, tile=tile)
        self.add_permanent(first_feats, first_labels)

    @property
    def first(self) -> tuple[Tensor, Tensor]:
        """Normalised features ``[C, h, w]`` and soft labels ``[K, h, w]`` of the first frame."""
        return self.permanent[0]

    def add_permanent(self, feats: Tensor, labels: Tensor, *, normalized: bool = False) -> None:
        """Keep a frame with known labels (a prompt) in the context of every later step.

        Beyond ``max_permanent`` frames the oldest after the first drops out.

        Args:
            feats: ``[C, h, w]`` features of the frame.
            labels: ``[K, h, w]`` float soft labels of the frame, on the features' grid.
            normalized: Whether ``feats`` are already L2-normalised along ``C``.

        Raises:
            ValueError: Features and labels on different grids.
        """
        if feats.shape[-2:] != labels.shape[-2:]:
            raise InputError(
                f"features {tuple(feats.shape)} and labels {tuple(labels.shape)} are on "
                "different grids"
            )
        feats = feats if normalized else F.normalize(feats.float(), dim=0)
        self.permanent.append((feats, labels.float()))
        if len(self.permanent) > self.max_permanent:
            del self.permanent[1]

    def propagate(self, feats: Tensor, *, normalized: bool = False) -> Tensor:
        """Soft labels ``[K, h, w]`` (float32) of a frame from its features ``[C, h, w]``
        (already L2-normalised along ``C`` with ``normalized``), without remembering the
        frame (see :meth:`step` and :meth:`remember`)."""
        return self._propagate(feats if normalized else F.normalize(feats.float(), dim=0))

    def _propagate(self, feats: Tensor) -> Tensor:
        context = [*self.permanent, *self.recent]
        return propagate_labels(
            feats,
            torch.stack([f for f, _ in context]),
            torch.stack([lab for _, lab in context]),
            normalized=True,
            **self.kwargs,
        )

    def step(self, feats: Tensor) -> Tensor:
        """Propagate to the next frame and remember it among the last frames.

        Args:
            feats: ``[C, h, w]`` features of the new frame.

        Returns:
            ``[K, h, w]`` float32 soft labels of the new frame.
        """
        feats = F.normalize(feats.float(), dim=0)
        labels = self._propagate(feats)
        self.remember(feats, labels, normalized=True)
        return labels

    def remember(self, feats: Tensor, labels: Tensor, *, normalized: bool = False) -> None:
        """Push a frame's features ``[C, h, w]`` and soft labels ``[K, h, w]`` into the queue
        of last frames (the oldest drops out); nothing with ``n_last_frames=0``."""
        if self.n_last_frames > 0:
            self.recent.append((feats if normalized else F.normalize(feats.float(), dim=0), labels))


def merge_group_labels(group_labels: list[Tensor], rule: str = "min") -> Tensor:
    """Merge the soft labels of object groups that share a frame into one set of channels.

    Each group (objects first prompted on the same frame) propagates its own labels,
    ``[1 + K_g, h, w]`` with channel 0 its background ("none of this group's objects"). The
    merged background is the elementwise ``min`` (or ``product``) of the groups'
    backgrounds; the object channels follow, group by group. One group is returned as it is.

    Args:
        group_labels: Non-empty list of ``[1 + K_g, h, w]`` float soft labels on one grid.
        rule: ``"min"`` or ``"product"``.

    Returns:
        ``[1 + sum K_g, h, w]`` float soft labels.
    """
    if len(group_labels) == 1:
        return group_labels[0]
    backgrounds = torch.stack([labels[0] for labels in group_labels])
    if rule == "min":
        background = backgrounds.amin(0)
    elif rule == "product":
        background = backgrounds.prod(0)
    else:
        raise InputError(f"rule must be 'min' or 'product', got {rule!r}")
    return torch.cat([background[None], *(labels[1:] for labels in group_labels)])


def apply_prompt_labels(
    labels: Tensor, prompt_channels: Tensor, covered: Tensor, prompted: Tensor
) -> Tensor:
    """A group's soft labels at a frame, corrected by a prompt (a partial annotation).

    The prompt fixes the objects it holds: the channel of each such object becomes exactly
    the prompt's pixels; at every pixel the prompt gives to some object (of this group or of
    another), the group's other object channels drop to 0; the background takes what is left,
    so each position still sums to 1. Objects of the group absent from the prompt keep their
    labels wherever the prompt holds no object.

    Args:
        labels: ``[K, h, w]`` float soft labels of the group (channel 0 its background).
        prompt_channels: ``[h, w]`` integer channel (of this group) of each pixel's object in
            the prompt, 0 where the prompt holds none of the group's objects.
        covered: ``[h, w]`` bool, the pixels the prompt gives to any object.
        prompted: ``[K]`` bool, the group's channels whose object is in the prompt (entry 0,
            the background, is ignored).

    Returns:
        ``[K, h, w]`` float32 corrected soft labels.
    """
    k = labels.shape[0]
    out = labels.float().masked_fill(covered[None], 0.0)
    exact = one_hot_labels(prompt_channels, k)
    out = torch.where(prompted.view(k, 1, 1), exact, out)
    out[0] = (1.0 - out[1:].sum(0)).clamp_min(0.0)
    return out


def propagate_sequence(
    features: Iterable[Tensor], first_labels: Tensor, **kwargs: Any
) -> Iterator[Tensor]:
    """Propagate first-frame labels through a sequence of feature maps (bring your own features).

    Args:
        features: Iterable of ``[C, h, w]`` feature maps, the first frame's first.
        first_labels: ``[h, w]`` integer (or bool) channel indices (0 = background, 1..K-1
            objects) or ``[K, h, w]`` float soft labels of the first frame; a tensor or a
            numpy array.
        **kwargs: :class:`LabelPropagator` settings (``n_last_frames``, ``radius``, ``topk``,
            ``temperature``, ``tile``).

    Yields:
        ``[K, h, w]`` float32 soft labels for every frame after the first.

    Raises:
        ValueError: Labels that are not ``[h, w]`` or ``[K, h, w]``, negative channel
            indices, or a bad setting (see :class:`LabelPropagator`).
        TypeError: ``[h, w]`` labels that are not integers.
    """
    first_labels = _first_labels(first_labels)
    frames = iter(features)
    try:
        first = next(frames)
    except StopIteration:
        return
    propagator = LabelPropagator(first, first_labels.to(first.device), **kwargs)
    for feats in frames:
        yield propagator.step(feats)


def _first_labels(labels: Tensor | np.ndarray) -> Tensor:
    """:func:`propagate_sequence`'s first labels as ``[K, h, w]`` float soft labels."""
    if isinstance(labels, np.ndarray):
        # Converted to a fresh array: torch warns about read-only ones (np.asarray of PIL).
        if labels.dtype == np.bool_ or np.issubdtype(labels.dtype, np.integer):
            labels = torch.from_numpy(labels.astype(np.int64))
        elif np.issubdtype(labels.dtype, np.floating):
            labels = torch.from_numpy(labels.astype(np.float32))
        else:
            raise TypeError(f"first_labels must hold numbers, got numpy dtype {labels.dtype}")
    elif not isinstance(labels, Tensor):
        raise TypeError(
            f"first_labels must be a tensor or numpy array, got {type(labels).__name__}"
        )
    if labels.dim() == 3:
        return labels.float()
    if labels.dim() != 2:
        raise InputError(
            "first_labels must be [h, w] channel indices or [K, h, w] soft labels, got shape "
            f"{tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype.is_complex:
        raise TypeError(
            f"[h, w] first_labels must hold integer channel indices, got {labels.dtype}; "
            "give [K, h, w] for soft labels"
        )
    labels = labels.long()
    if labels.numel() == 0:
        raise InputError(f"first_labels is empty (shape {tuple(labels.shape)})")
    if int(labels.min()) < 0:
        raise InputError(
            f"first_labels holds negative channel indices (min {int(labels.min())}); channel "
            "indices must be >= 0 (0 = background)"
        )
    return one_hot_labels(labels, int(labels.max()) + 1)
