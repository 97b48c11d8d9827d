"""report.md: the per-stage table and the latency report a person reads."""

from __future__ import annotations

from typing import Any


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


def _spread(ratio: dict[str, float] | None) -> str:
    if not ratio:
        return "-"
    return f"{ratio['median']:.2f}x ({ratio['min']:.2f}-{ratio['max']:.2f})"


def _rate(latency: dict[str, Any]) -> str:
    """Items per second, with the slowest and fastest round's where measured."""
    rate = _fmt(latency.get("throughput"), "rate")
    rounds = latency.get("throughput_rounds")
    if not rounds:
        return rate
    return f"{rate} ({_fmt(rounds['min'], 'rate')}-{_fmt(rounds['max'], 'rate')})"


def _profiles_table(report: dict[str, Any]) -> list[str]:
    """Every stage at every deployment profile (only when the recipe lists several)."""
    stages = [s for s in report["stages"] if len((s.get("metrics") or {}).get("profiles", {})) > 1]
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
        m = stage["metrics"]
        for label, measured in m["profiles"].items():
            lat = measured["latency"].get(m.get("primary_provider", "cpu"), {})
            lines.append(
                f"| {stage['name']} | {label} | {measured['batch']} | {measured['threads']} "
                f"| {_fmt(lat.get('p50_ms'), 'ms')} | {_fmt(lat.get('p90_ms'), 'ms')} "
                f"| {_rate(lat)} | {_spread(measured.get('speedup'))} "
                f"| {_spread(measured.get('speedup_vs_input'))} |"
            )
    return [*lines, ""]


def _recalibration(record: dict[str, Any]) -> str:
    """One BatchNorm recalibration (training/batchnorm.py) as a sentence."""
    text = (
        f"BatchNorm {record['where']}: {record['layers']} layers re-estimated over "
        f"{record['samples']} samples (means moved {record['mean_shift_sd']:.2f} sd)"
    )
    if record.get("metric"):
        text += f", {record['metric']} {record['before']:.2%} -> {record['after']:.2%}"
    return text + ("; kept" if record["kept"] else "; not kept (old statistics restored)")


def _stage_notes(report: dict[str, Any]) -> list[str]:
    """Per stage: its warnings, what its fine-tune trained with, its recalibrations."""
    lines = []
    for stage in report["stages"]:
        details = stage.get("details") or {}
        notes = [f"**warning**: {message}" for message in stage.get("warnings", [])]
        used = details.get("finetune_settings")
        if used:
            optimizer = used["optimizer"]
            table = ", ".join(f"{k} {v}" for k, v in optimizer.items() if k != "name")
            notes.append(f"fine-tune optimizer {optimizer['name']} ({table}): {used['source']}")
        notes += [_recalibration(r) for r in details.get("bn_recalibration") or []]
        lines += [f"- `{stage['name']}`: {note}" for note in notes]
    return ["## Stage notes", "", *lines, ""] if lines else []


def _header(report: dict[str, Any]) -> list[str]:
    """Title, failures and the stages slower than their input."""
    lines = [
        f"# compress run `{report['recipe']['name']}`: **{report['status'].upper()}**",
        "",
        f"compress {report['compress_version']}, report schema {report['schema_version']}, "
        f"finished {report['finished_at']} in {report['duration_s']:.1f} s.",
        "",
    ]
    if report.get("failures"):
        lines += ["## Missed budgets and errors", ""]
        lines += [f"- {failure}" for failure in report["failures"]]
        lines.append("")
    flags = [flag for stage in report["stages"] for flag in stage.get("flags", [])]
    if flags:
        lines += [
            "## Slower than their input",
            "",
            "No budget gates these (`speedup_vs_input_min` would); each stage below made "
            "its model slower than the model it was given, in every interleaved round:",
            "",
        ]
        lines += [f"- {flag['message']}" for flag in flags]
        lines.append("")
    return lines


def _stages_table(report: dict[str, Any]) -> list[str]:
    """One row per stage: accuracy, speed, size and counts."""
    lines: list[str] = []
    lines += [
        "## Stages",
        "",
        "| stage | type | status | accuracy | vs teacher (pts) | agreement | p50 ms | p90 ms "
        "| speed-up | vs input | size bytes | size ratio | params | MACs | folder |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for stage in report["stages"]:
        m = stage.get("metrics") or {}
        lat = m.get("latency", {}).get(m.get("primary_provider", "cpu"), {})
        speed = (m.get("speedup") or {}).get("median")
        vs_input = (m.get("speedup_vs_input") or {}).get("median")
        slower = " (slower)" if m.get("slower_than_input") else ""
        lines.append(
            f"| {stage['name']} | {stage['type']} | {stage['status']} "
            f"| {_fmt(m.get('accuracy'), 'pct')} "
            f"| {_fmt(m.get('accuracy_change'), 'pts')} | {_fmt(m.get('agreement'), 'pct')} "
            f"| {_fmt(lat.get('p50_ms'), 'ms')} "
            f"| {_fmt(lat.get('p90_ms'), 'ms')} | {_fmt(speed, 'x')} "
            f"| {_fmt(vs_input, 'x')}{slower} "
            f"| {_fmt(m.get('size_bytes'), 'int')} "
            f"| {_fmt(m.get('size_ratio'), 'x')} | {_fmt(m.get('params'), 'int')} "
            f"| {_fmt(m.get('macs'), 'int')} | `{stage['dir']}` |"
        )
    lines.append("")
    return lines


def _budgets(report: dict[str, Any]) -> list[str]:
    """Every budget check of every stage and of the final model."""
    lines: list[str] = []
    lines += ["## Budgets", ""]
    any_budget = False
    for owner, checks in [(s["name"], s.get("budgets", [])) for s in report["stages"]] + [
        ("final", (report.get("final") or {}).get("budgets", []))
    ]:
        for check in checks:
            any_budget = True
            mark = "pass" if check["passed"] else "**FAIL**"
            lines.append(f"- {owner}: {mark}: {check['message']}")
    if not any_budget:
        lines.append("No budgets were set.")
    lines.append("")
    return lines


def _pruning_steps(report: dict[str, Any]) -> list[str]:
    """Each pruning stage's steps: ratio, counts, accuracy, speed."""
    lines: list[str] = []
    for stage in report["stages"]:
        steps = (stage.get("details") or {}).get("steps")
        if not steps:
            continue
        details = stage["details"]
        lines += [
            f"## Pruning steps: `{stage['name']}` ({details.get('method')}, "
            f"{details.get('importance')})",
            "",
        ]
        if details.get("stopped"):
            lines += [f"Stopped: {details['stopped']}.", ""]
        lines += [
            "Every step's model timed interleaved with the stage's input (step 0) and the "
            "other steps; a speed-up is the median per-round p50 ratio, with its spread.",
            "",
            "| step | ratio | params | MACs | val accuracy | p50 ms | vs input | vs previous "
            "| kept |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        kept = details.get("kept_step", steps[-1]["step"])
        for step in steps:
            p50 = step.get("step_p50_ms", step.get("latency_p50_ms"))
            slower = " (slower)" if step.get("slower_than_previous") else ""
            lines.append(
                f"| {step['step']} | {step['ratio']:.3f} | {step['params']:,} | {step['macs']:,} "
                f"| {_fmt(step['val_accuracy'], 'pct')} | {_fmt(p50, 'ms')} "
                f"| {_spread(step.get('speedup_vs_input'))} "
                f"| {_spread(step.get('speedup_vs_previous'))}{slower} "
                f"| {'yes' if step['step'] == kept else ''} |"
            )
        lines.append("")

    return lines


def _latency(report: dict[str, Any]) -> list[str]:
    """How latency was measured, and every stage's figures."""
    lines: list[str] = []
    runtime = report["runtime"]
    lines += [
        "## Latency",
        "",
        f"ONNX Runtime {report['environment'].get('onnxruntime')}, batch {runtime['batch_size']}, "
        f"{runtime['threads']} intra-op thread(s), {runtime['warmup']} warm-up runs, "
        f"{runtime['rounds']} interleaved rounds x {runtime['repeats']} runs per model. "
        f"CPU: {report['environment'].get('cpu')}.",
        "Each stage's model was timed interleaved with the teacher's and with its input's "
        "(the previous stage's model) in the same rounds (A B C A B C ...); a speed-up is "
        "the median of per-round p50 ratios, with its spread.",
        "",
        "| stage | provider | p50 ms | p90 ms | p99 ms | mean ms | std ms | n "
        "| speed-up (min-max) | vs input (min-max) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for stage in report["stages"]:
        m = stage.get("metrics") or {}
        spread, input_spread = _spread(m.get("speedup")), _spread(m.get("speedup_vs_input"))
        for provider, lat in m.get("latency", {}).items():
            lines.append(
                f"| {stage['name']} | {provider} | {lat['p50_ms']:.4g} | {lat['p90_ms']:.4g} "
                f"| {lat['p99_ms']:.4g} | {lat['mean_ms']:.4g} | {lat['std_ms']:.3g} | {lat['n']} "
                f"| {spread} | {input_spread} |"
            )
    lines.append("")
    return lines


def _final(report: dict[str, Any]) -> list[str]:
    """The final model's file and input contract."""
    lines: list[str] = []
    final = report.get("final")
    if final:
        contract = final["input"]
        pre = contract["preprocessing"]
        if pre.get("kind") == "text":  # token ids: the tokenizer shipped beside the model
            inputs = " and ".join(f"`{i['name']}`" for i in contract["inputs"])
            described = (
                f"Inputs {inputs}: int64 {contract['shape']}, from `final/{pre['tokenizer']}` "
                f"(max_length {pre['max_length']}, padded on the {pre['padding_side']} "
                f"with id {pre['pad_id']}; labels {pre['labels']}). "
            )
        else:
            described = (
                f"Input `{contract['name']}`: {contract['dtype']} {contract['shape']} "
                f"({contract['layout']}); x = {pre['formula']} with scale {pre['scale']:.6g}, "
                f"mean {pre['mean']}, std {pre['std']}. "
            )
        lines += [
            "## Final model",
            "",
            f"`{final['path']}` (from stage `{final['stage']}`, "
            f"sha256 `{final['sha256'][:16]}...`).",
            "",
            described
            + f"Output `{contract['output']['name']}`: {contract['output']['shape']} class logits.",
            "",
        ]
        if report.get("best_stage") and report["best_stage"] != final["stage"]:
            lines.append(
                f"The last stage missed a final budget; stage `{report['best_stage']}` "
                "met them all "
                f"(its model is `{report['best_stage_path']}`)."
            )
            lines.append("")
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    """Render report.json's content as Markdown (no code needed to read a run)."""
    lines = [
        *_header(report),
        *_stages_table(report),
        *_budgets(report),
        *_stage_notes(report),
        *_pruning_steps(report),
        *_latency(report),
        *_profiles_table(report),
        *_final(report),
    ]
    return "\n".join(lines)
