"""A straightforward per-frame implementation of the official DINO video protocol (baseline).

It follows the structure of the DINO repository's ``eval_video_segmentation.py``: one frame
at a time through a ViT with unfused attention, a dense ``N x N`` affinity per context frame
multiplied by a neighbourhood mask, top-k over all context candidates, and the same
upsampling/argmax. Only the neighbourhood mask is built with tensor operations rather than
four nested Python loops (a one-off cost per video), which makes this baseline faster, not
slower, than the original. Used by the benchmarks in ``tools/`` to measure speed-ups side by
side; not part of the package.
"""

from __future__ import annotations

import copy
from collections import deque

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dinotrack import Tracker
from dinotrack.models.features import FeatureExtractor
from dinotrack.tracking.objects import channels_to_ids, ids_to_channels


def neighbourhood_mask(h: int, w: int, radius: int) -> torch.Tensor:
    """``[h*w, h*w]`` float: 1 where source and target are within ``radius`` rows and columns."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    near = ((ys[:, None] - ys[None, :]).abs() <= radius) & (
        (xs[:, None] - xs[None, :]).abs() <= radius
    )
    return near.float()


def dense_propagation(
    feat_tar: torch.Tensor,
    feat_sources: torch.Tensor,
    segs: torch.Tensor,
    mask: torch.Tensor,
    topk: int = 5,
    temperature: float = 0.1,
) -> torch.Tensor:
    """The official label propagation step.

    Args:
        feat_tar: ``[N, C]`` target features (un-normalised).
        feat_sources: ``[T, C, N]`` context features (un-normalised).
        segs: ``[T, K, h, w]`` context soft labels.
        mask: ``[N, N]`` neighbourhood mask (source x target), or None.

    Returns:
        ``[K, h, w]`` soft labels.
    """
    ncontext = feat_sources.shape[0]
    feat_tar = F.normalize(feat_tar, dim=1, p=2)
    feat_sources = F.normalize(feat_sources, dim=1, p=2)
    feat_tar = feat_tar.unsqueeze(0).repeat(ncontext, 1, 1)
    aff = torch.exp(torch.bmm(feat_tar, feat_sources) / temperature)  # [T, N_tar, N_src]
    if mask is not None:
        aff *= mask.unsqueeze(0)
    n = aff.shape[-1]
    aff = aff.transpose(2, 1).reshape(-1, n)  # [T*N_src, N_tar]
    tk_val, _ = torch.topk(aff, dim=0, k=topk)
    tk_val_min, _ = torch.min(tk_val, dim=0)
    aff[aff < tk_val_min] = 0
    aff = aff / torch.sum(aff, keepdim=True, axis=0)
    _, k_cls, h, w = segs.shape
    segs = segs.reshape(ncontext, k_cls, -1).transpose(2, 1).reshape(-1, k_cls).T
    return torch.mm(segs, aff).reshape(k_cls, h, w)


def norm_mask(mask: torch.Tensor) -> torch.Tensor:
    """Per-channel min-max normalisation of channels with a positive maximum (in place)."""
    for c in range(mask.shape[0]):
        channel = mask[c]
        if channel.max() > 0:
            channel = channel - channel.min()
            mask[c] = channel / channel.max()
    return mask


class OfficialProtocol:
    """Per-frame DINO protocol with a dense affinity, for side-by-side comparisons.

    Args:
        tracker: Supplies the backbone, spec and config (the same weights as the fast path);
            it is left as it is (the baseline runs a copy of its backbone).
    """

    def __init__(self, tracker: Tracker) -> None:
        net = copy.deepcopy(tracker.extractor.net)
        for blk in net.blocks:  # the official ViT computes attention explicitly
            blk.attn.fused_attn = False
        self.extractor = FeatureExtractor(net, tracker.spec, tracker.device, "fp32", "dino")
        self.tracker = tracker
        self.config = tracker.config

    @torch.inference_mode()
    def track(self, frames, first_mask: np.ndarray):
        """Yield ``(index, mask)`` like :meth:`dinotrack.Tracker.track`, frame by frame."""
        cfg, patch = self.config, self.tracker.patch_size
        frames = iter(frames)
        frame0 = next(frames)
        size = self.tracker.input_size(*frame0.shape[:2])
        h, w = size[0] // patch, size[1] // patch
        object_ids = tuple(int(i) for i in np.unique(first_mask) if i)
        small = np.asarray(Image.fromarray(first_mask.astype(np.uint8)).resize((w, h), 0))
        small = torch.from_numpy(ids_to_channels(small, object_ids))
        first_seg = F.one_hot(small, len(object_ids) + 1).permute(2, 0, 1)[None].float()
        first_feat = self.extractor(frame0[None], size)[0].reshape(-1, h * w)  # [C, N]
        mask = neighbourhood_mask(h, w, cfg.radius) if cfg.radius >= 0 else None
        queue: deque = deque(maxlen=cfg.n_last_frames)
        yield 0, first_mask
        for index, frame in enumerate(frames, start=1):
            feat = self.extractor(frame[None], size)[0].reshape(-1, h * w)
            feats = torch.stack([first_feat] + [f for f, _ in queue])
            segs = torch.cat([first_seg] + [s for _, s in queue])
            soft = dense_propagation(feat.T, feats, segs, mask, cfg.topk, cfg.temperature)
            queue.append((feat, soft[None]))
            up = F.interpolate(soft[None], scale_factor=patch, mode="bilinear")[0]
            labels = norm_mask(up).argmax(0).numpy().astype(np.uint8)
            labels = np.asarray(Image.fromarray(labels).resize(frame.shape[1::-1], 0))
            yield index, channels_to_ids(labels, object_ids)
