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
    if kind == "pts":
        return f"{value * 100:+.2f}"
    return str(value)


def render_markdown(report: dict[str, Any]) -> str:
    """Render report.json's content as Markdown (no code needed to read a run)."""
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
    lines += [
        "## Stages",
        "",
        "| stage | type | status | accuracy | vs teacher (pts) | p50 ms | p90 ms | speed-up "
        "| size bytes | size ratio | params | MACs | folder |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for stage in report["stages"]:
        m = stage.get("metrics") or {}
        lat = m.get("latency", {}).get(m.get("primary_provider", "cpu"), {})
        speed = (m.get("speedup") or {}).get("median")
        lines.append(
            f"| {stage['name']} | {stage['type']} | {stage['status']} "
            f"| {_fmt(m.get('accuracy'), 'pct')} "
            f"| {_fmt(m.get('accuracy_change'), 'pts')} | {_fmt(lat.get('p50_ms'), 'ms')} "
            f"| {_fmt(lat.get('p90_ms'), 'ms')} | {_fmt(speed, 'x')} "
            f"| {_fmt(m.get('size_bytes'), 'int')} "
            f"| {_fmt(m.get('size_ratio'), 'x')} | {_fmt(m.get('params'), 'int')} "
            f"| {_fmt(m.get('macs'), 'int')} | `{stage['dir']}` |"
        )
    lines.append("")
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
            "| step | ratio | params | MACs | val accuracy | p50 ms | speed-up | kept |",
            "|---|---|---|---|---|---|---|---|",
        ]
        kept = details.get("kept_step", steps[-1]["step"])
        for step in steps:
            lines.append(
                f"| {step['step']} | {step['ratio']:.3f} | {step['params']:,} | {step['macs']:,} "
                f"| {_fmt(step['val_accuracy'], 'pct')} | {_fmt(step.get('latency_p50_ms'), 'ms')} "
                f"| {_fmt(step.get('speedup'), 'x')} | {'yes' if step['step'] == kept else ''} |"
            )
        lines.append("")

    runtime = report["runtime"]
    lines += [
        "## Latency",
        "",
        f"ONNX Runtime {report['environment'].get('onnxruntime')}, batch {runtime['batch_size']}, "
        f"{runtime['threads']} intra-op thread(s), {runtime['warmup']} warm-up runs, "
        f"{runtime['rounds']} interleaved rounds x {runtime['repeats']} runs per model. "
        f"CPU: {report['environment'].get('cpu')}.",
        "Each stage's model was timed interleaved with the teacher's (A B A B ...); "
        "speed-up is the median of per-round p50 ratios, with its spread.",
        "",
        "| stage | provider | p50 ms | p90 ms | p99 ms | mean ms | std ms | n "
        "| speed-up (min-max) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for stage in report["stages"]:
        m = stage.get("metrics") or {}
        speed = m.get("speedup")
        spread = f"{speed['median']:.2f}x ({speed['min']:.2f}-{speed['max']:.2f})" if speed else "-"
        for provider, lat in m.get("latency", {}).items():
            lines.append(
                f"| {stage['name']} | {provider} | {lat['p50_ms']:.4g} | {lat['p90_ms']:.4g} "
                f"| {lat['p99_ms']:.4g} | {lat['mean_ms']:.4g} | {lat['std_ms']:.3g} | {lat['n']} "
                f"| {spread} |"
            )
    lines.append("")
    final = report.get("final")
    if final:
        contract = final["input"]
        pre = contract["preprocessing"]
        lines += [
            "## Final model",
            "",
            f"`{final['path']}` (from stage `{final['stage']}`, "
            f"sha256 `{final['sha256'][:16]}...`).",
            "",
            f"Input `{contract['name']}`: {contract['dtype']} {contract['shape']} "
            f"({contract['layout']}); x = {pre['formula']} with scale {pre['scale']:.6g}, "
            f"mean {pre['mean']}, std {pre['std']}. "
            f"Output `{contract['output']['name']}`: {contract['output']['shape']} class logits.",
            "",
        ]
        if report.get("best_stage") and report["best_stage"] != final["stage"]:
            lines.append(
                f"The last stage missed a final budget; stage `{report['best_stage']}` "
                "met them all "
                f"(its model is `{report['best_stage_path']}`)."
            )
            lines.append("")
    return "\n".join(lines)
