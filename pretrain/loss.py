"""DINO's self-distillation loss with a centred, sharpened teacher.

For teacher view ``i`` (a global view) and student view ``v != i``::

    q_i = softmax((t_i - c) / tau_t),   log p_v = log_softmax(s_v / tau_s)
    L = mean over pairs (i, v), v != i, of mean over the batch of  -sum_k q_i[k] log p_v[k]

The centre ``c`` is an EMA (momentum m) of the teacher outputs' batch mean, averaged over all
processes, updated after the loss is computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dinotrack.errors import InputError
from pretrain.distributed import all_reduce_mean


@dataclass
class LossOutput:
    """The loss and what the collapse watch needs.

    Attributes:
        loss: Scalar to minimise (float32, with gradient).
        pair_losses: float32 ``[2, V]``, the cross-entropy of each (teacher view, student view)
            pair; NaN where the views coincide (not part of the loss).
        teacher_entropy: Mean entropy (nats) of the teacher's per-image distributions,
            ``mean_n H(q_n)``: near ``log K`` when every image gets a near-uniform target
            (the collapse that centring alone produces), near 0 when targets are one-hot.
        teacher_mean_entropy: Entropy (nats) of the teacher's batch-mean distribution,
            ``H(mean_n q_n)``: near ``log K`` when the batch spreads over all prototypes
            (healthy, what centring enforces), near 0 when one prototype takes all. The gap
            ``teacher_mean_entropy - teacher_entropy`` (>= 0) is the information the targets
            carry about which image they came from; it is 0 in both collapses.
        kl: Mean KL divergence (nats) from the teacher's to the student's distributions over
            the loss pairs (the loss minus the teacher entropy).
    """

    loss: torch.Tensor
    pair_losses: torch.Tensor
    teacher_entropy: torch.Tensor
    kl: torch.Tensor
    teacher_mean_entropy: torch.Tensor


class DINOLoss(nn.Module):
    """Cross-entropy between centred-sharpened teacher and student distributions.

    Args:
        out_dim: Number of prototypes K.
        num_views: Views given to the student (2 global + local ones).
        student_temp: Student temperature.
        center_momentum: EMA momentum of the centre.
    """

    def __init__(
        self,
        out_dim: int,
        num_views: int,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        self.num_views = num_views
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(
        self, student_out: torch.Tensor, teacher_out: torch.Tensor, teacher_temp: float
    ) -> LossOutput:
        """Compute the loss (the centre is not changed; call :meth:`update_center` after).

        Args:
            student_out: ``[num_views * B, K]`` student scores, view-major.
            teacher_out: ``[2 * B, K]`` teacher scores of the two global views.
            teacher_temp: Teacher temperature for this step.
        """
        student = (student_out.float() / self.student_temp).chunk(self.num_views)
        teacher_logits = (teacher_out.float() - self.center) / teacher_temp
        teacher_log_q = F.log_softmax(teacher_logits, dim=-1).detach()
        teacher_q = teacher_log_q.exp()
        entropy = -(teacher_q * teacher_log_q).sum(dim=-1).mean()
        mean_q = teacher_q.mean(dim=0)
        mean_entropy = -(mean_q * mean_q.clamp_min(1e-30).log()).sum()
        pairs = torch.full((2, self.num_views), float("nan"), device=student_out.device)
        total = student_out.new_zeros((), dtype=torch.float32)
        count = 0
        for i, q in enumerate(teacher_q.chunk(2)):
            for v, s in enumerate(student):
                if v == i:
                    continue
                ce = torch.sum(-q * F.log_softmax(s, dim=-1), dim=-1).mean()
                pairs[i, v] = ce.detach()
                total = total + ce
                count += 1
        loss = total / count
        return LossOutput(
            loss, pairs, entropy.detach(), loss.detach() - entropy.detach(), mean_entropy
        )

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        """EMA update of the centre with the batch mean of ``teacher_out`` over all processes."""
        batch_center = teacher_out.float().mean(dim=0, keepdim=True)
        all_reduce_mean(batch_center)
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)


class PatchLoss(nn.Module):
    """iBOT's masked-patch self-distillation, as DINOv2 uses it.

    The student sees a global view with some patches replaced by a learnt mask token; the
    teacher sees the same view whole. At every masked patch ``j`` of image ``n``::

        q_nj = softmax((t_nj - c) / tau_t),   log p_nj = log_softmax(s_nj / tau_s)
        L = (1 / N) sum over masked images n of  mean over masked j of  -sum_k q_nj[k] log p_nj[k]

    where ``N`` counts every global view in the batch, masked or not, so the images without a
    mask dilute the loss as in DINOv2. The centre ``c`` is the patch loss's own: an EMA of the
    mean teacher score over the masked patches.

    Args:
        out_dim: Number of prototypes of the head that scores the patches.
        student_temp: Student temperature.
        center_momentum: EMA momentum of the centre.
    """

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9):
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(
        self,
        student_scores: torch.Tensor,
        teacher_scores: torch.Tensor,
        masks: torch.Tensor,
        teacher_temp: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss and the teacher's mean per-patch entropy (nats, detached).

        Args:
            student_scores: ``[M, K]`` student scores of the ``M`` masked patches, in the
                order of ``masks.nonzero()``.
            teacher_scores: ``[M, K]`` teacher scores of the same patches.
            masks: bool ``[N, P]``, the masked patches of each of the ``N`` global views.
            teacher_temp: Teacher temperature for this step.
        """
        teacher_log_q = F.log_softmax(
            (teacher_scores.float() - self.center) / teacher_temp, dim=-1
        ).detach()
        teacher_q = teacher_log_q.exp()
        ce = -(teacher_q * F.log_softmax(student_scores.float() / self.student_temp, dim=-1))
        per_patch = ce.sum(dim=-1)
        counts = masks.sum(dim=1, keepdim=True).clamp_min(1).float()
        weights = (1.0 / counts).expand_as(masks)[masks]
        loss = (per_patch * weights).sum() / masks.shape[0]
        if per_patch.numel():
            entropy = -(teacher_q * teacher_log_q).sum(dim=-1).mean()
        else:
            entropy = per_patch.new_zeros(())
        return loss, entropy.detach()

    @torch.no_grad()
    def update_center(self, teacher_scores: torch.Tensor) -> None:
        """EMA update of the centre with the mean teacher score of the masked patches over all
        processes (no change when no process masked a patch)."""
        total = torch.cat(
            [teacher_scores.float().sum(dim=0), teacher_scores.new_tensor([len(teacher_scores)])]
        )
        all_reduce_mean(total)  # a mean of sums and counts: their ratio is the global mean
        if total[-1] > 0:
            batch_center = (total[:-1] / total[-1]).unsqueeze(0)
            self.center.mul_(self.center_momentum).add_(
                batch_center, alpha=1 - self.center_momentum
            )


def koleo_loss(embeddings: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Kozachenko-Leonenko entropy regulariser (Sablayrolles et al. 2019), as DINOv2 applies it
    to the class tokens of one global view across the batch: with ``x_n`` L2-normalised and
    ``d_n`` the distance from ``x_n`` to its nearest other ``x_m``::

        L = -mean_n log(d_n + eps)

    Minimising it spreads the embeddings apart (a uniform spread maximises their entropy).

    Args:
        embeddings: ``[B, D]``, ``B >= 2``.

    Raises:
        ValueError: Fewer than two embeddings (no neighbour to measure).
    """
    if embeddings.shape[0] < 2:
        raise InputError(f"KoLeo needs at least 2 embeddings per view, got {embeddings.shape[0]}")
    x = F.normalize(embeddings.float(), dim=-1, eps=eps)
    with torch.no_grad():
        similarity = x @ x.T
        similarity.fill_diagonal_(-2.0)  # never one's own neighbour (cosines are >= -1)
        nearest = similarity.argmax(dim=1)
    distances = (x - x[nearest]).norm(dim=-1)
    return -torch.log(distances + eps).mean()


def gram_loss(student_patches: torch.Tensor, anchor_patches: torch.Tensor) -> torch.Tensor:
    """DINOv3's Gram anchoring: the mean squared difference between the patch-similarity
    (Gram) matrices of the student and of an earlier teacher (the anchor), image by image::

        G = X X^T with X the L2-normalised patch tokens [P, D] of one image
        L = mean over images and entries of (G_student - G_anchor)^2

    It constrains only how patches relate to each other, not the features themselves, so the
    student may keep learning while its patch similarities stay as local as the anchor's.

    Args:
        student_patches: ``[N, P, D]``.
        anchor_patches: ``[N, P, D']`` (detached by the caller).
    """
    s = F.normalize(student_patches.float(), dim=-1)
    a = F.normalize(anchor_patches.float(), dim=-1)
    return F.mse_loss(s @ s.transpose(1, 2), a @ a.transpose(1, 2))
