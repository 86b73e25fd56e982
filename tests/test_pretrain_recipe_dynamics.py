"""The dense-feature recipes of DINO's successors on toy problems, as
test_pretrain_dynamics.py does for DINO's centring and sharpening.

* iBOT (DINOv2's masked-patch loss): "images" are rows of tokens that share a cluster, so a
  masked token can be told from its neighbours only. A student that sees its neighbours learns
  to give the teacher's prototype at masked tokens; one that sees each token alone cannot.
* KoLeo: embeddings that start bunched together spread apart until their nearest neighbours
  are far.
* Gram anchoring (DINOv3): a pull that makes every patch feature alike (the dense-feature
  degradation of long runs) wrecks the patch similarities; anchoring keeps them, while still
  letting the features move in ways that keep them (a rotation).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pretrain.loss import PatchLoss, gram_loss, koleo_loss
from pretrain.masking import batch_masks
from pretrain.model import DINOHead

CLUSTERS, DIM, TOKENS, K, BATCH = 8, 16, 8, 32, 32


class TokenNet(nn.Module):
    """A token-wise MLP, plus (with ``context``) the mean of the image's other tokens: the
    toy counterpart of attention. Masked tokens are replaced by a learnt mask token."""

    def __init__(self, context: bool) -> None:
        super().__init__()
        self.context = context
        self.local = nn.Sequential(nn.Linear(DIM, 64), nn.GELU(), nn.Linear(64, 64))
        self.mix = nn.Linear(DIM, 64)
        self.mask_token = nn.Parameter(torch.zeros(DIM))
        self.head = DINOHead(64, K, hidden_dim=64, bottleneck_dim=16)

    def forward(self, tokens: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        if masks is not None:
            tokens = torch.where(masks.unsqueeze(-1), self.mask_token, tokens)
        x = self.local(tokens)
        if self.context:
            others = (tokens.sum(1, keepdim=True) - tokens) / (tokens.shape[1] - 1)
            x = x + self.mix(others)
        return self.head(x.flatten(0, 1)).view(*tokens.shape[:2], K)


def ibot_toy_run(context: bool, steps: int = 400) -> dict[str, float]:
    """Train on masked tokens with the iBOT loss alone; return the share of masked tokens at
    which the student's prototype is the teacher's, and the teacher's patch entropies."""
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(CLUSTERS, DIM, generator=gen)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        student = TokenNet(context)
        teacher = TokenNet(context)
    teacher.load_state_dict(student.state_dict())
    teacher.requires_grad_(False)
    loss_fn = PatchLoss(K, student_temp=0.1, center_momentum=0.9)
    optimizer = torch.optim.AdamW(student.parameters(), lr=2e-3, weight_decay=0.04)
    agree = []
    for step in range(steps):
        labels = torch.randint(0, CLUSTERS, (BATCH,), generator=gen)
        tokens = centres[labels].unsqueeze(1) + 0.3 * torch.randn(BATCH, TOKENS, DIM, generator=gen)
        masks = batch_masks(BATCH, (2, TOKENS // 2), (0.1, 0.5), 1.0, gen)
        with torch.no_grad():
            teacher_scores = teacher(tokens)[masks]
        student_scores = student(tokens, masks)[masks]
        loss, entropy = loss_fn(student_scores, teacher_scores, masks, teacher_temp=0.04)
        loss_fn.update_center(teacher_scores)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
                t.mul_(0.99).add_(s, alpha=0.01)
        if step >= steps - 50:
            target = (teacher_scores - loss_fn.center).argmax(-1)
            agree.append((student_scores.argmax(-1) == target).float().mean().item())
    q = torch.softmax((teacher_scores - loss_fn.center) / 0.04, dim=-1)
    mean_q = q.mean(0)
    return {
        "agreement": sum(agree) / len(agree),
        "entropy": entropy.item(),
        "mean_entropy": -(mean_q * mean_q.clamp_min(1e-30).log()).sum().item(),
    }


def test_ibot_learns_to_predict_masked_tokens_from_their_context():
    r = ibot_toy_run(context=True)
    assert r["agreement"] > 0.8  # the teacher's prototype, found from the neighbours
    assert r["entropy"] < 0.3 * math.log(K)  # confident patch targets ...
    assert r["mean_entropy"] > 0.5 * math.log(CLUSTERS)  # ... spread over prototypes (centring)


def test_ibot_cannot_predict_masked_tokens_without_context():
    # Every masked token becomes the same mask token: at best the most common prototype.
    r = ibot_toy_run(context=False)
    assert r["agreement"] < 0.5


def test_patch_loss_weighs_images_equally_and_counts_unmasked_ones():
    loss_fn = PatchLoss(4)
    masks = torch.tensor([[True, True, True, False], [True, False, False, False], [False] * 4])
    teacher = torch.tensor([[10.0, 0, 0, 0]]).repeat(4, 1)  # one-hot targets at tau 0.04
    student = torch.zeros(4, 4)
    student[:3, 0] = 5.0  # image 0: right at every masked patch; image 1: uniform
    loss, _ = loss_fn(student, teacher, masks, teacher_temp=0.04)
    right = -torch.log_softmax(torch.tensor([50.0, 0, 0, 0]), 0)[0]
    uniform = math.log(4)
    assert loss.item() == pytest.approx((right.item() + uniform) / 3, rel=1e-5)


def nn_distances(x: torch.Tensor) -> torch.Tensor:
    x = nn.functional.normalize(x, dim=-1)
    d = torch.cdist(x, x)
    return (d + 10 * torch.eye(len(x))).min(dim=1).values


def test_koleo_spreads_bunched_embeddings():
    gen = torch.Generator().manual_seed(0)
    points = (torch.tensor([1.0, 0, 0]) + 0.05 * torch.randn(32, 3, generator=gen)).requires_grad_()
    before = nn_distances(points.detach())
    optimizer = torch.optim.SGD([points], lr=0.05)
    for _ in range(300):
        optimizer.zero_grad()
        koleo_loss(points).backward()
        optimizer.step()
    after = nn_distances(points.detach())
    assert after.min() > 3 * before.max()  # even the closest pair ends farther than any start
    # 32 points on the sphere: the best packing keeps neighbours about 0.6 apart (chord).
    assert after.mean() > 0.4


def test_koleo_value_is_minus_log_nearest_distance():
    square = torch.tensor([[1.0, 0], [0, 1], [-1, 0], [0, -1]])  # neighbours sqrt(2) apart
    assert koleo_loss(3 * square).item() == pytest.approx(-math.log(math.sqrt(2)), abs=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        koleo_loss(square[:1])


def gram_toy_run(gram_weight: float, pull: str, steps: int = 300) -> dict[str, float]:
    """Patch features ``[2, 16, 8]`` trained on a pull, with Gram anchoring to their start."""
    gen = torch.Generator().manual_seed(0)
    anchor = torch.randn(2, 16, 8, generator=gen)
    rotation = torch.linalg.qr(torch.randn(8, 8, generator=gen))[0]
    target = anchor @ rotation
    features = anchor.clone().requires_grad_()
    optimizer = torch.optim.Adam([features], lr=0.02)
    common = nn.functional.normalize(torch.ones(8), dim=0)
    for _ in range(steps):
        unit = nn.functional.normalize(features, dim=-1)
        if pull == "alike":  # every patch towards one direction: locality is lost
            task = (unit - common).square().sum(-1).mean()
        else:  # towards a rotation of the start: the patch similarities do not change
            task = (features - target).square().mean()
        loss = task + gram_weight * gram_loss(features, anchor)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return {
            "gram": gram_loss(features, anchor).item(),
            "to_target": (features - target).square().mean().item(),
        }


def test_gram_anchoring_keeps_patch_similarities_from_degrading():
    free = gram_toy_run(0.0, "alike")
    anchored = gram_toy_run(10.0, "alike")
    assert free["gram"] > 0.2  # patches became alike: similarities near 1 everywhere
    assert anchored["gram"] < 0.1 * free["gram"]


def test_gram_anchoring_lets_features_move_where_similarities_stay():
    anchored = gram_toy_run(10.0, "rotate")
    assert anchored["to_target"] < 0.01 and anchored["gram"] < 1e-3
