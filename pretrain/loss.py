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
