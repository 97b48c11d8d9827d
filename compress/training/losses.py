"""Losses of the training loop."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), the mean over rows: the soft-target term,
    and the validation loss of a fit on unlabeled data.

    The T^2 factor keeps the soft term's gradient scale independent of T.

    Example:
        >>> round(kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), 4.0).item(), 6)
        0.0
    """
    soft_student = F.log_softmax(student_logits / temperature, dim=1)
    soft_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(soft_student, soft_teacher, reduction="batchmean", log_target=True)
    return temperature**2 * kl


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """Hinton et al.: alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE.

    With alpha = 1 the labels are not read (unlabeled data has -1 there).

    Example:
        >>> s = torch.zeros(2, 3); t = torch.zeros(2, 3); y = torch.tensor([0, 1])
        >>> round(distillation_loss(s, t, y, temperature=4.0, alpha=1.0).item(), 6)
        0.0
    """
    soft = alpha * kd_loss(student_logits, teacher_logits, temperature)
    if alpha == 1.0:
        return soft
    return soft + (1.0 - alpha) * F.cross_entropy(student_logits, labels)
