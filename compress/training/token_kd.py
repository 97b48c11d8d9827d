"""Knowledge distillation of a causal language model on the teacher's token distributions.

Every position of a window predicts the next token, so the loss is the teacher-to-student
KL divergence at every position, averaged over positions (Hinton's T^2 keeps its gradient
scale independent of the temperature). No labels are read: the teacher's distributions
are the targets.

The teacher's logits can be computed once for a set of windows (`cache_teacher_logits`)
when they fit a memory cap. Full fp32 logits cost `vocab * 4` bytes a token (SmolLM2:
196 kB, so 10^5 tokens are 20 GB); when they do not fit, the cache keeps each position's
top-k log-probabilities (exact, from the full softmax at the distillation temperature)
plus the mass of everything else as one "rest" bucket, and the loss is the KL between
the two distributions coarsened onto those k + 1 outcomes. That is a lower bound of the
full KL (coarsening never increases a KL divergence), exact when the teacher's rest mass
is zero. Measured on SmolLM2 over Jane Austen windows, k = 64 leaves on average 13.7% of
the teacher's mass in the rest bucket (the bucket still carries it as one outcome, but
not how it spreads). It costs 8 bytes per kept logit (512 B a token at k = 64: 10^5
tokens in 51 MB; k = 256, 205 MB). We chose it over renormalising the top-k (which
drops the rest and over-weights the top) and over fp16 full logits (still 10 GB for
10^5 tokens).

Example:
    >>> cache = cache_teacher_logits(teacher, windows, memory_cap_mb=512)  # doctest: +SKIP
    >>> loss = cache.loss(student(input_ids=windows[:4]).logits, rows=slice(0, 4))  # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from compress.errors import RecipeError

if TYPE_CHECKING:
    import torch
    from torch import nn


def _masked_mean(per_token: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return per_token.mean()
    weight = mask.to(per_token.dtype)
    return (per_token * weight).sum() / weight.sum().clamp(min=1.0)


def token_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)) at every position, averaged
    over positions (those where `mask` is nonzero, if given).

    Args:
        student_logits: [B, T, V] (or [N, V]).
        teacher_logits: the same shape, no gradient needed.
        temperature: softens both distributions (1.0: the model's own).
        mask: [B, T] (or [N]) weights, e.g. the attention mask; None: every position.

    Example:
        >>> s = torch.zeros(1, 3, 5)
        >>> token_kd_loss(s, s).item()
        0.0
    """
    import torch.nn.functional as F

    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} vs teacher "
            f"{tuple(teacher_logits.shape)}: the vocabularies and windows must match"
        )
    student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    per_token = (teacher.exp() * (teacher - student)).sum(-1)
    return temperature**2 * _masked_mean(per_token, mask)


def _log_rest(top_logprobs: torch.Tensor) -> torch.Tensor:
    """log(1 - sum(exp(top))) along the last axis, kept finite."""
    import torch

    top_mass = torch.logsumexp(top_logprobs, dim=-1).exp().clamp(max=1.0 - 1e-6)
    return torch.log1p(-top_mass)


def topk_kd_loss(
    student_logits: torch.Tensor,
    top_logprobs: torch.Tensor,
    top_indices: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """`token_kd_loss` against a teacher kept as its top-k log-probabilities (at
    `temperature`) plus a rest bucket (see the module docstring: a lower bound of the
    full KL, exact when the rest is empty).

    Args:
        student_logits: [B, T, V].
        top_logprobs: [B, T, k] the teacher's log-probabilities of its k likeliest tokens.
        top_indices: [B, T, k] their token ids.
        temperature: the temperature the log-probabilities were taken at.
        mask: [B, T] position weights or None.
    """
    import torch
    import torch.nn.functional as F

    student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    student_top = student.gather(-1, top_indices.long())
    teacher_top = top_logprobs.float()
    teacher_rest, student_rest = _log_rest(teacher_top), _log_rest(student_top)
    per_token = (teacher_top.exp() * (teacher_top - student_top)).sum(-1)
    per_token = per_token + teacher_rest.exp() * (teacher_rest - student_rest)
    return temperature**2 * _masked_mean(per_token, mask).to(torch.float32)


@dataclass
class TeacherLogits:
    """A teacher's outputs for a fixed set of windows, in the form that fit the cap.

    Attributes:
        kind: "full" (fp32 logits, exact) or "top-k" (log-probs + ids, an approximation).
        temperature: the temperature the top-k log-probabilities were taken at.
        logits: [n, T, V] fp32 (kind "full").
        top_logprobs: [n, T, k] fp32 (kind "top-k").
        top_indices: [n, T, k] int32 (kind "top-k").
        seconds: time the teacher's forward passes took.
        cpu_seconds: process CPU time they took.
    """

    kind: str
    temperature: float
    logits: torch.Tensor | None = None
    top_logprobs: torch.Tensor | None = None
    top_indices: torch.Tensor | None = None
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    @property
    def nbytes(self) -> int:
        tensors = (self.logits, self.top_logprobs, self.top_indices)
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    def loss(self, student_logits: torch.Tensor, rows, mask=None) -> torch.Tensor:
        """The KD loss of `student_logits` for the cached windows `rows` (an index
        tensor, list or slice into the windows the cache was built from)."""
        if self.kind == "full":
            return token_kd_loss(student_logits, self.logits[rows], self.temperature, mask)
        return topk_kd_loss(
            student_logits, self.top_logprobs[rows], self.top_indices[rows],
            self.temperature, mask,
        )  # fmt: skip


def cache_teacher_logits(
    teacher: nn.Module,
    windows,
    *,
    temperature: float = 1.0,
    memory_cap_mb: float = 1024.0,
    top_k: int = 64,
    batch_size: int = 4,
) -> TeacherLogits | None:
    """Run `teacher` once over `windows` and keep its outputs: full fp32 logits when
    they fit `memory_cap_mb`, else top-k log-probabilities + a rest bucket when those
    fit, else None (the caller runs the teacher on every batch instead).

    Args:
        teacher: a causal LM (eval mode); its forward is run without gradients.
        windows: token ids [n, T] (array, tensor or an `(ids, mask)` pair).
        temperature: the distillation temperature (top-k log-probs are taken at it).
        memory_cap_mb: the most the cache may hold.
        top_k: outcomes kept per position when the full logits do not fit.
        batch_size: windows per teacher forward.

    Example:
        >>> cache = cache_teacher_logits(teacher, ids, memory_cap_mb=64)  # doctest: +SKIP
        >>> cache.kind  # doctest: +SKIP
        'top-k'
    """
    import torch

    from compress.pruning.decoder import iter_windows, run_logits

    if top_k < 1:
        raise RecipeError(f"top_k {top_k}: must be >= 1")
    batches = list(iter_windows(windows, batch_size))
    tokens = sum(b.numel() for b in batches)
    vocab = teacher.config.vocab_size
    cap = memory_cap_mb * 2**20
    if tokens * vocab * 4 <= cap:
        kind = "full"
    elif tokens * min(top_k, vocab) * 8 <= cap:
        kind = "top-k"
    else:
        return None
    start, cpu = time.perf_counter(), time.process_time()
    parts: list = []
    for ids in batches:
        logits = run_logits(teacher, ids).float()
        if kind == "full":
            parts.append(logits)
            continue
        logprobs = torch.log_softmax(logits / temperature, dim=-1)
        values, indices = logprobs.topk(min(top_k, vocab), dim=-1)
        parts.append((values, indices.to(torch.int32)))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    if kind == "full":
        return TeacherLogits(kind, temperature, logits=torch.cat(parts), seconds=seconds,
                             cpu_seconds=cpu)  # fmt: skip
    return TeacherLogits(
        kind,
        temperature,
        top_logprobs=torch.cat([v for v, _ in parts]),
        top_indices=torch.cat([i for _, i in parts]),
        seconds=seconds,
        cpu_seconds=cpu,
    )


TRAIN_CHOICES = ("all", "norms")


def trainable_parameters(model: nn.Module, train: str) -> list:
    """The parameters a KD fine-tune updates. "all": every one. "norms": only the
    normalisation scales (RMSNorm / LayerNorm), so every Linear weight, the embedding and the
    head stay exactly as they came: a model read from a GGUF file keeps its own 4-bit blocks,
    and the quantize stage re-encodes them instead of quantizing trained weights again."""
    if train == "all":
        return [p for p in model.parameters() if p.requires_grad]
    if train != "norms":
        raise ValueError(f"train {train!r}: one of {TRAIN_CHOICES}")
    params = [
        p
        for module in model.modules()
        if type(module).__name__.endswith(("RMSNorm", "LayerNorm"))
        for p in module.parameters(recurse=False)
    ]
    if not params:
        raise ValueError(f"train 'norms': {type(model).__name__} has no RMSNorm/LayerNorm")
    return params


def distill_tokens_(
    student: nn.Module,
    cache: TeacherLogits,
    windows,
    *,
    steps: int,
    batch_size: int = 2,
    lr: float = 5e-5,
    seed: int = 0,
    log_every: int = 0,
    train: str = "all",
) -> dict:
    """A short KD fine-tune of `student` on `windows` against `cache` (the teacher's
    outputs for the same windows): AdamW, linear warm-up over 10% of the steps then
    linear decay, gradient clip 1.0. `train` ("all" or "norms", `trainable_parameters`)
    says which weights move. Returns losses and tokens/s for the report.

    Example:
        >>> distill_tokens_(student, cache, ids, steps=100)["tokens_per_s"]  # doctest: +SKIP
        112.0
    """
    import torch

    from compress.pruning.decoder import iter_windows

    ids = torch.cat(list(iter_windows(windows, 1 << 30)))
    generator = torch.Generator().manual_seed(seed)
    params = trainable_parameters(student, train)
    moving = {id(p) for p in params}
    frozen = [p for p in student.parameters() if p.requires_grad and id(p) not in moving]
    for p in frozen:  # no weight gradients computed for them: a frozen step is cheaper
        p.requires_grad_(False)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup))),
    )
    student.train()
    # process CPU time beside wall time: on a shared machine tokens per CPU second is the
    # figure that carries over to an idle one (1 thread)
    losses, start, cpu = [], time.perf_counter(), time.process_time()
    try:
        for step in range(steps):
            rows = torch.randint(0, len(ids), (batch_size,), generator=generator)
            logits = student(input_ids=ids[rows], use_cache=False).logits
            loss = cache.loss(logits, rows)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            if log_every and (step + 1) % log_every == 0:
                recent = sum(losses[-log_every:]) / log_every
                print(f"step {step + 1}/{steps} kd loss {recent:.4f}", flush=True)
    finally:  # the caller's model stays trainable, also when a step fails
        for p in frozen:
            p.requires_grad_(True)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    student.eval()
    return {
        "steps": steps,
        "train": train,
        "trained_parameters": sum(p.numel() for p in params),
        "tokens": steps * batch_size * ids.shape[1],
        "seconds": seconds,
        "tokens_per_s": steps * batch_size * ids.shape[1] / seconds,
        "cpu_seconds": cpu,
        "tokens_per_cpu_s": steps * batch_size * ids.shape[1] / max(cpu, 1e-9),
        "loss_first": sum(losses[:10]) / max(1, len(losses[:10])),
        "loss_last": sum(losses[-10:]) / max(1, len(losses[-10:])),
        "cache": cache.kind,
    }
