"""Block masks for iBOT's masked-patch loss, drawn as DINOv2 draws them.

A batch of ``N`` global views gets masks on ``int(N * mask_p)`` of them (at least one); their
target ratios are spread evenly over ``[min, max]`` (the k-th masked view draws its ratio
from the k-th of equal sub-ranges), and each mask is a union of random rectangles (aspect
ratio 0.3 to 3.3, at least 4 patches each) grown until it covers its target count. The masked
views are placed at random positions in the batch.
"""

from __future__ import annotations

import math

import torch


def block_mask(
    grid: tuple[int, int], count: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A bool ``[H, W]`` mask of about ``count`` patches, built from random rectangles.

    Rectangles are added while fewer than ``count`` patches are covered; the last one may
    overshoot by a little, and growth stops early after 10 rectangles in a row add nothing.
    """
    height, width = grid
    mask = torch.zeros(height, width, dtype=torch.bool)
    failures = 0
    while int(mask.sum()) < count and failures < 10:
        left_to_cover = count - int(mask.sum())
        area = _uniform(min(4, left_to_cover), left_to_cover, generator)
        aspect = math.exp(_uniform(math.log(0.3), math.log(1 / 0.3), generator))
        h = max(1, min(height, round(math.sqrt(area * aspect))))
        w = max(1, min(width, round(math.sqrt(area / aspect))))
        top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
        before = int(mask.sum())
        mask[top : top + h, left : left + w] = True
        failures = failures + 1 if int(mask.sum()) == before else 0
    return mask


def batch_masks(
    num_views: int,
    grid: tuple[int, int],
    ratio: tuple[float, float],
    mask_p: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Masks of a batch of global views: bool ``[num_views, H * W]``.

    ``max(1, int(num_views * mask_p))`` views are masked, the k-th of them with a target ratio
    drawn in the k-th of equal sub-ranges of ``ratio``; the others get no mask.
    """
    patches = grid[0] * grid[1]
    masked = max(1, int(num_views * mask_p))
    bounds = torch.linspace(ratio[0], ratio[1], masked + 1).tolist()
    masks = torch.zeros(num_views, patches, dtype=torch.bool)
    for k in range(masked):
        share = _uniform(bounds[k], bounds[k + 1], generator)
        masks[k] = block_mask(grid, int(patches * share), generator).flatten()
    order = torch.randperm(num_views, generator=generator)
    return masks[order]


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))
