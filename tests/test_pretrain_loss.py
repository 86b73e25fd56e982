"""The DINO loss against a direct computation of its formula on small tensors."""

from __future__ import annotations

import math

import pytest
import torch

from pretrain.loss import DINOLoss


def direct_loss(student, teacher, center, views, t_temp, s_temp):
    """Written from the formula, element by element, in float64."""
    b = len(teacher) // 2
    k = len(teacher[0])
    total, pairs = 0.0, 0
    for i in range(2):
        for v in range(views):
            if v == i:
                continue
            per_image = []
            for n in range(b):
                t = [(teacher[i * b + n][j] - center[j]) / t_temp for j in range(k)]
                z = sum(math.exp(x) for x in t)
                q = [math.exp(x) / z for x in t]
                s = [student[v * b + n][j] / s_temp for j in range(k)]
                log_z = math.log(sum(math.exp(x) for x in s))
                per_image.append(-sum(q[j] * (s[j] - log_z) for j in range(k)))
            total += sum(per_image) / b
            pairs += 1
    return total / pairs


@pytest.mark.parametrize("views", [2, 4])
def test_loss_equals_formula(views):
    gen = torch.Generator().manual_seed(views)
    b, k = 3, 5
    student = torch.randn(views * b, k, generator=gen, dtype=torch.float64)
    teacher = torch.randn(2 * b, k, generator=gen, dtype=torch.float64)
    loss_fn = DINOLoss(k, views, student_temp=0.1, center_momentum=0.9)
    loss_fn.center.copy_(torch.randn(1, k, generator=gen))
    out = loss_fn(student.float(), teacher.float(), teacher_temp=0.04)
    expected = direct_loss(
        student.tolist(), teacher.tolist(), loss_fn.center[0].tolist(), views, 0.04, 0.1
    )
    assert out.loss.item() == pytest.approx(expected, rel=1e-4)
    assert torch.isnan(out.pair_losses.diagonal()).all()
    off = ~torch.eye(2, views, dtype=torch.bool)
    assert out.pair_losses[off].mean().item() == pytest.approx(expected, rel=1e-4)


def test_entropy_and_kl():
    gen = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(8, 6, generator=gen), torch.randn(4, 6, generator=gen)
    loss_fn = DINOLoss(6, 4)
    out = loss_fn(student, teacher, teacher_temp=0.07)
    q = torch.softmax(teacher / 0.07, dim=-1)
    entropy = -(q * q.log()).sum(-1).mean()
    assert out.teacher_entropy.item() == pytest.approx(entropy.item(), rel=1e-5)
    assert out.kl.item() == pytest.approx(out.loss.item() - entropy.item(), rel=1e-5)
    assert out.kl.item() > 0  # student and teacher differ
    # Both views identical and equally sharp in student and teacher: the KL vanishes.
    views = torch.cat([teacher[:2], teacher[:2]])
    out = DINOLoss(6, 2, student_temp=0.07)(views, views, teacher_temp=0.07)
    assert out.kl.item() == pytest.approx(0.0, abs=1e-5)


def test_gradient_reaches_the_student_only():
    student = torch.randn(6, 4, requires_grad=True)
    teacher = torch.randn(4, 4, requires_grad=True)
    DINOLoss(4, 3)(student, teacher, teacher_temp=0.04).loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_center_is_an_ema_of_the_batch_mean():
    loss_fn = DINOLoss(3, 2, center_momentum=0.9)
    loss_fn.center.copy_(torch.tensor([[1.0, 2.0, 3.0]]))
    teacher = torch.tensor([[0.0, 0.0, 6.0], [2.0, 4.0, 0.0]])
    loss_fn.update_center(teacher)
    expected = 0.9 * torch.tensor([1.0, 2.0, 3.0]) + 0.1 * torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(loss_fn.center[0], expected)
    loss_fn.update_center(torch.zeros(2, 3))
    torch.testing.assert_close(loss_fn.center[0], 0.9 * expected)


def test_mean_entropy_separates_the_two_collapses_from_a_healthy_teacher():
    """Per-image entropy H(q_n) and batch-mean entropy H(mean q_n) (DINO Fig. 7's target
    entropy is the first): uniform collapse has both at log K, one-prototype collapse both
    at 0, healthy one-hot targets spread over the prototypes H(q_n) ~ 0, H(mean) = log K."""
    k, views = 4, 2
    log_k = math.log(k)
    student = torch.zeros(views * k, k)
    cases = {
        "uniform": torch.zeros(2 * k, k),
        "one prototype": torch.tensor([[50.0, 0, 0, 0]]).repeat(2 * k, 1),
        "healthy": 50.0 * torch.eye(k).repeat(2, 1),
    }
    expected = {"uniform": (log_k, log_k), "one prototype": (0, 0), "healthy": (0, log_k)}
    for name, teacher in cases.items():
        out = DINOLoss(k, views)(student, teacher, teacher_temp=1.0)
        per_image, mean = expected[name]
        assert out.teacher_entropy.item() == pytest.approx(per_image, abs=1e-6), name
        assert out.teacher_mean_entropy.item() == pytest.approx(mean, abs=1e-6), name
    # A general batch: H(mean q) from its definition, and never below the mean of H(q_n).
    gen = torch.Generator().manual_seed(1)
    teacher = torch.randn(6, 5, generator=gen)
    out = DINOLoss(5, 3)(torch.randn(9, 5, generator=gen), teacher, teacher_temp=0.5)
    mean_q = torch.softmax(teacher / 0.5, dim=-1).mean(0)
    assert out.teacher_mean_entropy.item() == pytest.approx(
        -(mean_q * mean_q.log()).sum().item(), rel=1e-5
    )
    assert out.teacher_mean_entropy >= out.teacher_entropy


def test_centre_is_taken_from_the_uncentred_teacher_outputs():
    """DINO updates the centre with the raw teacher scores, not the centred ones: a constant
    offset in the scores is absorbed by the centre and then no longer changes the targets."""
    loss_fn = DINOLoss(3, 2, center_momentum=0.0)
    teacher = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]) + torch.tensor([5.0, -3.0, 2.0])
    loss_fn.update_center(teacher)
    torch.testing.assert_close(loss_fn.center[0], teacher.mean(0))
    centred = teacher - loss_fn.center
    out = loss_fn(torch.zeros(4, 3), teacher, teacher_temp=0.1)
    q = torch.softmax(centred / 0.1, dim=-1)
    assert out.teacher_entropy.item() == pytest.approx(-(q * q.log()).sum(-1).mean().item())
