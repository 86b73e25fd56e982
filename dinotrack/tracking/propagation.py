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

import torch
import torch.nn.functional as F
from torch import Tensor

from dinotrack.config import (
    RADIUS,
    TEMPERATURE,
    TOPK,
    check_int,
    check_temperature,
    cpu_tile,
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
    tile: int | None = None,
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
            only; results do not depend on it); ``None``: :func:`~dinotrack.config.cpu_tile`
            of the radius.
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
    if tile is None:
        tile = cpu_tile(check_int("radius", radius))
    check_settings(radius, topk, temperature, tile)
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
            sim = _scores_per_row(queries, keys, starts, offsets, n_x)
        else:
            sim = _scores_in_runs(queries, keys, starts, offsets, n_x, targets)
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


def _scores_per_row(
    queries: Tensor, keys: Tensor, starts: list[int], offsets: list[int], n_x: int
) -> Tensor:
    """Similarity scores ``[n_nb, rows * n_x, t², T * t²]`` of the target tiles of the rows
    beginning at tiles ``starts`` (``n_x`` tiles each) with their neighbours at ``offsets``:
    one product per row and offset, skipping the padding tiles between rows."""
    cells, n_src = queries.shape[1], keys.shape[1]
    sim = keys.new_empty(len(offsets), len(starts) * n_x, cells, n_src)
    for j, off in enumerate(offsets):
        for i, a in enumerate(starts):
            rows_out = sim[j, i * n_x : (i + 1) * n_x]
            torch.bmm(queries[a : a + n_x], keys[a + off : a + off + n_x].mT, out=rows_out)
    return sim


def _scores_in_runs(
    queries: Tensor,
    keys: Tensor,
    starts: list[int],
    offsets: list[int],
    n_x: int,
    targets: Tensor,
) -> Tensor:
    """The scores of :func:`_scores_per_row`, from one product per offset over the whole run
    of rows, padding tiles included, the real ``targets`` tiles then picked out: 10x fewer
    kernel launches, for a few more flops and one copy."""
    a0, a1 = starts[0], starts[-1] + n_x
    cells, n_src = queries.shape[1], keys.shape[1]
    run = keys.new_empty(len(offsets), a1 - a0, cells, n_src)
    for j, off in enumerate(offsets):
        torch.bmm(queries[a0:a1], keys[a0 + off : a1 + off].mT, out=run[j])
    return run[:, targets - a0]


def check_settings(radius: int, topk: int, temperature: float, tile: int) -> None:
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
