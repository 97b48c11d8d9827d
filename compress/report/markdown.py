"""report.md: the per-stage table and the latency report a person reads.

One function per section, each reading the typed report (`report.records`);
`render_markdown` puts them in order.
"""

from __future__ import annotations

from typing import Any

from compress.report.records import (
    Final,
    Latency,
    LMContract,
    Metrics,
    PruneStep,
    Recalibration,
    Report,
    Spread,
    StageRecord,
    TextContract,
)


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "pct":
        return f"{value * 100:.2f}%"
    if kind == "ms":
        return f"{value:.4g}"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "x":
        return f"{value:.2f}x"
    if kind == "rate":
        return f"{value:,.1f}"
    if kind == "pts":
        return f"{value * 100:+.2f}"
    return str(value)


def _spread(ratio: Spread | None) -> str:
    if ratio is None:
        return "-"
    return f"{ratio.median:.2f}x ({ratio.min:.2f}-{ratio.max:.2f})"


def _rate(latency: Latency | None) -> str:
    """Items per second, with the slowest and fastest round's where measured."""
    if latency is None:
        return "-"
    rate = _fmt(latency.throughput, "rate")
    rounds = latency.throughput_rounds
    if rounds is None:
        return rate
    return f"{rate} ({_fmt(rounds.min, 'rate')}-{_fmt(rounds.max, 'rate')})"


def _p(latency: Latency | None, field: str) -> str:
    return _fmt(getattr(latency, field) if latency is not None else None, "ms")


def _header(report: Report) -> list[str]:
    return [
        f"# compress run `{report.recipe.name}`: **{report.status.upper()}**",
        "",
        f"compress {report.compress_version}, report schema {report.schema_version}, "
        f"finished {report.finished_at} in {report.duration_s:.1f} s.",
        "",
    ]


def _bullets(title: str, intro: list[str], items: list[str]) -> list[str]:
    if not items:
        return []
    return [f"## {title}", "", *intro, *[f"- {item}" for item in items], ""]


def _notices(report: Report) -> list[str]:
    """Missed budgets and errors, warnings, and the stages slower than their input."""
    flags = [f.message for stage in report.stages for f in stage.flags if f.kind != _WORSE]
    worse = [f.message for stage in report.stages for f in stage.flags if f.kind == _WORSE]
    warnings = report.warnings + [
        f"{stage.name}: {warning}" for stage in report.stages for warning in stage.warnings
    ]
    slower_intro = [
        "No budget gates these (`speedup_vs_input_min` would); each stage below made "
        "its model slower than the model it was given, in every interleaved round:",
        "",
    ]
    return (
        _bullets("Missed budgets and errors", [], report.failures)
        + _bullets("Warnings", [], warnings)
        + _bullets("Slower than their input", slower_intro, flags)
        + _bullets("Worse perplexity than their input", _WORSE_INTRO, worse)
    )


# a language model stage whose perplexity rose above its input's (`pipeline.tasks.causal_lm`)
_WORSE = "perplexity_above_input"
_WORSE_INTRO = [
    "No budget gates these (`perplexity_increase_max` gates the increase over the "
    "baseline); each stage below raised the perplexity of the model it was given:",
    "",
]


def _stage_row(stage: StageRecord) -> str:
    m = stage.metrics or Metrics()
    lat = m.primary_latency()
    speed = m.speedup.median if m.speedup else None
    vs_input = m.speedup_vs_input.median if m.speedup_vs_input else None
    slower = " (slower)" if m.slower_than_input else ""
    return (
        f"| {stage.name} | {stage.type} | {stage.status} | {_fmt(m.accuracy, 'pct')} "
        f"| {_fmt(m.accuracy_change, 'pts')} | {_fmt(m.agreement, 'pct')} "
        f"| {_p(lat, 'p50_ms')} | {_p(lat, 'p90_ms')} | {_fmt(speed, 'x')} "
        f"| {_fmt(vs_input, 'x')}{slower} | {_fmt(m.size_bytes, 'int')} "
        f"| {_fmt(m.size_ratio, 'x')} | {_fmt(m.params, 'int')} "
        f"| {_fmt(m.macs, 'int')} | `{stage.dir}` |"
    )


def _stages_table(report: Report) -> list[str]:
    return [
        "## Stages",
        "",
        "| stage | type | status | accuracy | vs teacher (pts) | agreement | p50 ms | p90 ms "
        "| speed-up | vs input | size bytes | size ratio | params | MACs | folder |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *[_stage_row(stage) for stage in report.stages],
        "",
    ]


def _language_model(report: Report) -> list[str]:
    """A language model's figures (task causal-lm): perplexity, fidelity, decode speed."""
    stages = [s for s in report.stages if s.metrics is not None and s.metrics.perplexity]
    if not stages:
        return []
    profile = stages[-1].metrics.generation or {}
    lines = [
        "## Language model",
        "",
        f"Perplexity on the test windows; decode speed at prompt {profile.get('prompt')}, "
        f"{profile.get('generate')} new tokens, batch {profile.get('batch')}, "
        f"{profile.get('threads')} thread(s), onnxruntime-genai, interleaved with the "
        f"baseline and each stage's input (median of {profile.get('rounds')} rounds).",
        "",
        "| stage | perplexity | vs baseline | agreement | KL | MB | prefill ms "
        "| decode tokens/s | speed-up | vs input |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for stage in stages:
        m = stage.metrics
        lines.append(
            f"| {stage.name} | {m.perplexity:.4g} | {_fmt(m.perplexity_increase, 'pts')}% "
            f"| {_fmt(m.agreement, 'pct')} | {_fmt(m.kl_mean, 'ms')} "
            f"| {m.size_bytes / 1e6:.1f} | {_fmt(m.prefill_ms, 'ms')} "
            f"| {_fmt(m.decode_tokens_per_s, 'rate')} | {_spread(m.speedup)} "
            f"| {_spread(m.speedup_vs_input)} |"
        )
    return [*lines, ""]


def _budgets(report: Report) -> list[str]:
    owners = [(stage.name, stage.budgets) for stage in report.stages]
    owners.append(("final", report.final.budgets if report.final else []))
    lines = [
        f"- {owner}: {'pass' if result.passed else '**FAIL**'}: {result.message}"
        for owner, results in owners
        for result in results
    ]
    return ["## Budgets", "", *(lines or ["No budgets were set."]), ""]


def _step_row(step: PruneStep, kept: int) -> str:
    p50 = step.step_p50_ms if step.step_p50_ms is not None else step.latency_p50_ms
    slower = " (slower)" if step.slower_than_previous else ""
    return (
        f"| {step.step} | {step.ratio:.3f} | {step.params:,} | {step.macs:,} "
        f"| {_fmt(step.val_accuracy, 'pct')} | {_fmt(p50, 'ms')} "
        f"| {_spread(step.speedup_vs_input)} "
        f"| {_spread(step.speedup_vs_previous)}{slower} "
        f"| {'yes' if step.step == kept else ''} |"
    )


def _pruning_steps(stage: StageRecord) -> list[str]:
    """A pruning stage's step table (nothing for other stages)."""
    details = stage.details
    if details is None or not details.steps:
        return []
    lines = [
        f"## Pruning steps: `{stage.name}` ({details.method}, {details.importance})",
        "",
    ]
    if details.stopped:
        lines += [f"Stopped: {details.stopped}.", ""]
    kept = details.kept_step if details.kept_step is not None else details.steps[-1].step
    return lines + [
        "Every step's model timed interleaved with the stage's input (step 0) and the "
        "other steps; a speed-up is the median per-round p50 ratio, with its spread.",
        "",
        "| step | ratio | params | MACs | val accuracy | p50 ms | vs input | vs previous | kept |",
        "|---|---|---|---|---|---|---|---|---|",
        *[_step_row(step, kept) for step in details.steps],
        "",
    ]


def _latency(report: Report) -> list[str]:
    runtime, environment = report.runtime, report.environment
    how = (
        f"ONNX Runtime {environment.get('onnxruntime')}, batch {runtime.batch_size}, "
        f"{runtime.threads} intra-op thread(s), {runtime.warmup} warm-up runs, "
        f"{runtime.rounds} interleaved rounds x {runtime.repeats} runs per model. "
    )
    if any(s.metrics is not None and s.metrics.generation for s in report.stages):
        how = (  # a language model: timed by generation (section "Language model")
            "Language model: milliseconds per decoded token at the generation profile "
            "(onnxruntime-genai), one value per interleaved round. "
        )
    lines = [
        "## Latency",
        "",
        how + f"CPU: {environment.get('cpu')}.",
        "Each stage's model was timed interleaved with the teacher's and with its input's "
        "(the previous stage's model) in the same rounds (A B C A B C ...); a speed-up is "
        "the median of per-round p50 ratios, with its spread.",
        "",
        "| stage | provider | p50 ms | p90 ms | p99 ms | mean ms | std ms | n "
        "| speed-up (min-max) | vs input (min-max) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for stage in report.stages:
        m = stage.metrics or Metrics()
        spreads = f"{_spread(m.speedup)} | {_spread(m.speedup_vs_input)}"
        for provider, lat in m.latency.items():
            lines.append(
                f"| {stage.name} | {provider} | {lat.p50_ms:.4g} | {lat.p90_ms:.4g} "
                f"| {lat.p99_ms:.4g} | {lat.mean_ms:.4g} | {lat.std_ms:.3g} | {lat.n} "
                f"| {spreads} |"
            )
    return [*lines, ""]


def _profiles_table(report: Report) -> list[str]:
    """Every stage at every deployment profile (only when the recipe lists several)."""
    stages = [s for s in report.stages if s.metrics is not None and len(s.metrics.profiles) > 1]
    if not stages:
        return []
    lines = [
        "## Deployment profiles",
        "",
        "| stage | profile | batch | threads | p50 ms | p90 ms | items/s (rounds) | speed-up "
        "| vs input |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for stage in stages:
        m = stage.metrics
        for label, measured in m.profiles.items():
            lat = measured.latency.get(m.provider)
            lines.append(
                f"| {stage.name} | {label} | {measured.batch} | {measured.threads} "
                f"| {_p(lat, 'p50_ms')} | {_p(lat, 'p90_ms')} "
                f"| {_rate(lat)} | {_spread(measured.speedup)} "
                f"| {_spread(measured.speedup_vs_input)} |"
            )
    return [*lines, ""]


def _contract(final: Final) -> str:
    """How to feed the shipped model, in one sentence."""
    contract = final.input
    if isinstance(contract, LMContract):  # a folder onnxruntime-genai generates from
        files = ", ".join(f"`{name}`" for name in contract.files)
        return (
            f"A language model folder (`final/`: {files}); generate with onnxruntime-genai "
            f"alone: `{contract.generate.get('example')}`"
        )
    pre = contract.preprocessing
    if isinstance(contract, TextContract):  # token ids: the tokenizer shipped beside it
        inputs = " and ".join(f"`{named.name}`" for named in contract.inputs)
        described = (
            f"Inputs {inputs}: int64 {contract.shape}, from `final/{pre.tokenizer}` "
            f"(max_length {pre.max_length}, padded on the {pre.padding_side} "
            f"with id {pre.pad_id}; labels {pre.labels}). "
        )
    else:
        described = (
            f"Input `{contract.name}`: {contract.dtype} {contract.shape} "
            f"({contract.layout}); x = {pre.formula} with scale {pre.scale:.6g}, "
            f"mean {pre.mean}, std {pre.std}. "
        )
    output = contract.output
    return described + f"Output `{output.name}`: {output.shape} class logits."


def _final(report: Report) -> list[str]:
    final = report.final
    if final is None:
        return []
    lines = [
        "## Final model",
        "",
        f"`{final.path}` (from stage `{final.stage}`, sha256 `{final.sha256[:16]}...`).",
        "",
        _contract(final),
        "",
    ]
    if report.best_stage and report.best_stage != final.stage:
        lines += [
            f"The last stage missed a final budget; stage `{report.best_stage}` met them all "
            f"(its model is `{report.best_stage_path}`).",
            "",
        ]
    return lines


def _recalibration(record: Recalibration) -> str:
    """One BatchNorm recalibration (training/batchnorm.py) as a sentence."""
    text = (
        f"BatchNorm {record.where}: {record.layers} layers re-estimated over "
        f"{record.samples} samples (means moved {record.mean_shift_sd:.2f} sd)"
    )
    if record.metric and record.before is not None and record.after is not None:
        text += f", {record.metric} {record.before:.2%} -> {record.after:.2%}"
    if record.improved is not None and record.worsened is not None:
        text += f" (+{record.improved}/-{record.worsened} rows"
        text += f", p = {record.p_value:.2g})" if record.p_value is not None else ")"
    return text + ("; kept" if record.kept else "; discarded (old statistics restored)")


def _stage_notes(report: Report) -> list[str]:
    """Per stage: what its fine-tune trained with, and its BatchNorm recalibrations."""
    lines = []
    for stage in report.stages:
        details = stage.details
        if details is None:
            continue
        notes = []
        used = details.finetune_settings
        if used is not None:
            optimizer = used.optimizer
            table = ", ".join(f"{k} {v}" for k, v in optimizer.items() if k != "name")
            notes.append(f"fine-tune optimizer {optimizer.get('name')} ({table}): {used.source}")
        notes += [_recalibration(r) for r in details.bn_recalibration or []]
        lines += [f"- `{stage.name}`: {note}" for note in notes]
    return ["## Stage notes", "", *lines, ""] if lines else []


def render_markdown(report: Report) -> str:
    """Render report.json's content as Markdown (no code needed to read a run).

    Args:
        report: the typed report (`RunReport.write`, `read_report`).

    Example:
        >>> render_markdown(read_report(Path("runs/digits"))).splitlines()[0]  # doctest: +SKIP
        '# compress run `digits`: **PASSED**'
    """
    sections = [
        _header(report),
        _notices(report),
        _stages_table(report),
        _language_model(report),
        _budgets(report),
        _stage_notes(report),
        *[_pruning_steps(stage) for stage in report.stages],
        _latency(report),
        _profiles_table(report),
        _final(report),
    ]
    return "\n".join(line for section in sections for line in section)
