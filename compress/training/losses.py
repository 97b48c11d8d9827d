"""Losses of the training loop."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """Hinton et al.: alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE.

    The T^2 factor keeps the soft term's gradient scale independent of T.

    Example:
        >>> s = torch.zeros(2, 3); t = torch.zeros(2, 3); y = torch.tensor([0, 1])
        >>> round(distillation_loss(s, t, y, temperature=4.0, alpha=1.0).item(), 6)
        0.0
    """
    soft_student = F.log_softmax(student_logits / temperature, dim=1)
    soft_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(soft_student, soft_teacher, reduction="batchmean", log_target=True)
    hard = F.cross_entropy(student_logits, labels)
    return alpha * temperature**2 * kl + (1.0 - alpha) * hard
