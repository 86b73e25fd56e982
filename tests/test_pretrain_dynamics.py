"""DINO's balance of centring and sharpening (paper, Fig. 7) on a toy task that the loss, the
head and the EMA teacher must solve together.

"Images" are noisy points around 16 cluster centres; a view adds fresh noise; the backbone is
a small MLP. With centring and a sharper teacher (0.04 against the student's 0.1) the
teacher's per-image entropy falls far below log K while the entropy of its batch mean stays
near log 16 (one prototype per cluster); without centring one prototype takes everything;
without sharpening (teacher as soft as the student) the targets become uniform and the KL
vanishes: the drift that short runs on real frames show when their network cannot yet tell
views of one image from views of others.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pretrain.loss import DINOLoss
from pretrain.model import DINOHead, MultiCropNet

CLUSTERS, DIM, K, BATCH, VIEWS = 16, 32, 64, 64, 4


def toy_run(teacher_temp: float, center_momentum: float, steps: int = 300) -> dict[str, float]:
    """Train on the toy task; return the last step's teacher entropies and KL, and the purity
    of the teacher's prototype assignment (share of images whose prototype's majority
    cluster is their own)."""
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(CLUSTERS, DIM, generator=gen)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        backbone = nn.Sequential(nn.Linear(DIM, 64), nn.GELU(), nn.Linear(64, 64))
        student = MultiCropNet(backbone, DINOHead(64, K, hidden_dim=64, bottleneck_dim=16))
    teacher = MultiCropNet(
        nn.Sequential(nn.Linear(DIM, 64), nn.GELU(), nn.Linear(64, 64)),
        DINOHead(64, K, hidden_dim=64, bottleneck_dim=16),
    )
    teacher.load_state_dict(student.state_dict())
    teacher.requires_grad_(False)
    loss_fn = DINOLoss(K, VIEWS, student_temp=0.1, center_momentum=center_momentum)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-3, weight_decay=0.04)
    for _ in range(steps):
        labels = torch.randint(0, CLUSTERS, (BATCH,), generator=gen)
        points = centres[labels] + 0.5 * torch.randn(BATCH, DIM, generator=gen)
        views = [points + 0.5 * torch.randn(BATCH, DIM, generator=gen) for _ in range(VIEWS)]
        with torch.no_grad():
            teacher_out = teacher(views[:2])
        out = loss_fn(student(views), teacher_out, teacher_temp)
        if center_momentum < 1:
            loss_fn.update_center(teacher_out)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        with torch.no_grad():
            for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
                t.mul_(0.99).add_(s, alpha=0.01)
    assigned = (teacher_out[:BATCH] - loss_fn.center).argmax(-1)
    majority = sum(
        torch.bincount(labels[assigned == k], minlength=CLUSTERS).max().item()
        for k in assigned.unique()
    )
    return {
        "entropy": out.teacher_entropy.item(),
        "mean_entropy": out.teacher_mean_entropy.item(),
        "kl": out.kl.item(),
        "purity": majority / BATCH,
    }


def test_centring_and_sharpening_together_learn_the_clusters():
    r = toy_run(teacher_temp=0.04, center_momentum=0.9)
    assert r["entropy"] < 0.15 * math.log(K)  # confident per-image targets
    assert r["mean_entropy"] > math.log(CLUSTERS) - 1.0  # spread over about one per cluster
    assert r["purity"] > 0.5  # prototypes follow the clusters (chance: about 1/16)


def test_without_centring_one_prototype_takes_all():
    r = toy_run(teacher_temp=0.04, center_momentum=1.0)  # 1.0: the centre stays at 0
    assert r["mean_entropy"] < 0.1 * math.log(K)
    assert r["purity"] < 0.3


@pytest.mark.parametrize("teacher_temp", [0.1, 0.2])
def test_without_sharpening_the_targets_become_uniform(teacher_temp):
    r = toy_run(teacher_temp=teacher_temp, center_momentum=0.9)
    assert r["entropy"] > 0.95 * math.log(K)
    assert r["kl"] < 0.05
