"""Hidden-state (feature) distillation: MSE between chosen student and teacher layers.

`feature_layers = [[s, t], ...]` pairs hidden states in transformers'
`output_hidden_states` numbering (0: the embeddings, i + 1: the output of layer i),
taken from each model's `feature_modules()` with forward hooks, so the models run
their ordinary `forward` (and export unchanged). The loss is the mean squared
difference over the tokens the attention mask keeps, times `feature_weight`, added to
the logits distillation loss. Both models must have the same hidden width.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from compress.errors import StageError


def _capture(modules: list[nn.Module], wanted: set[int], store: dict[int, torch.Tensor]):
    handles = []
    for index in wanted:

        def hook(_module, _inputs, output, index=index):
            store[index] = output[0] if isinstance(output, tuple) else output

        handles.append(modules[index].register_forward_hook(hook))
    return handles


class FeatureDistiller:
    """Hooks on both models; `teacher_forward` runs the teacher on a batch, `loss`
    compares the student's hidden states from its last forward with the teacher's.

    Example:
        >>> distiller = FeatureDistiller(student, teacher, [[1, 1], [2, 3]], 1.0)  # doctest: +SKIP
    """

    def __init__(
        self, student: nn.Module, teacher: nn.Module, pairs: Sequence[Sequence[int]], weight: float
    ):
        for name, model in (("student", student), ("teacher", teacher)):
            if not hasattr(model, "feature_modules"):
                raise StageError(
                    f"feature_layers needs hidden states, and the {name} "
                    f"({type(model).__name__}) has no feature_modules(): use an hf-encoder"
                )
        self.pairs = [(int(s), int(t)) for s, t in pairs]
        self.weight = weight
        student_modules, teacher_modules = student.feature_modules(), teacher.feature_modules()
        for s, t in self.pairs:
            if not (0 <= s < len(student_modules) and 0 <= t < len(teacher_modules)):
                raise StageError(
                    f"feature_layers pair [{s}, {t}]: the student has hidden states "
                    f"0..{len(student_modules) - 1}, the teacher 0..{len(teacher_modules) - 1}"
                )
        self.student_states: dict[int, torch.Tensor] = {}
        self.teacher_states: dict[int, torch.Tensor] = {}
        self.mask: torch.Tensor | None = None
        self.handles = _capture(student_modules, {s for s, _ in self.pairs}, self.student_states)
        self.handles += _capture(teacher_modules, {t for _, t in self.pairs}, self.teacher_states)
        self.teacher = teacher

    @torch.no_grad()
    def teacher_forward(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The teacher's logits on `inputs`, its hidden states kept for `loss`."""
        self.mask = inputs[1] if len(inputs) > 1 else None
        return self.teacher(*inputs)

    def loss(self) -> torch.Tensor:
        """weight * mean over pairs of the masked MSE of the hidden states."""
        total = 0.0
        for s, t in self.pairs:
            student, teacher = self.student_states[s], self.teacher_states[t]
            if student.shape != teacher.shape:
                raise StageError(
                    f"feature_layers pair [{s}, {t}]: student hidden state {tuple(student.shape)}"
                    f" vs teacher {tuple(teacher.shape)}: the widths must match"
                )
            squared = (student.float() - teacher.float()).pow(2)
            if self.mask is not None:
                keep = self.mask.to(squared.dtype).unsqueeze(-1)
                total = total + (squared * keep).sum() / (keep.sum() * squared.shape[-1]).clamp(
                    min=1.0
                )
            else:
                total = total + squared.mean()
        return self.weight * total / len(self.pairs)

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
        self.student_states.clear()
        self.teacher_states.clear()
