"""report.html: one self-contained page (plots embedded as PNG data URIs), no code needed.

Plots: the accuracy-latency path from teacher to final model, deployed size per
stage, and the latency distribution of every stage on every provider.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from compress.report.markdown import render_markdown


def _figure_to_data_uri(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _evaluated(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in report["stages"] if s.get("metrics")]


def _shown_provider(metrics: dict[str, Any]) -> str | None:
    """The primary provider, or the first measured one when the primary was unavailable."""
    latency = metrics.get("latency", {})
    primary = metrics.get("primary_provider")
    return primary if primary in latency else next(iter(latency), None)


def _tradeoff_plot(report: dict[str, Any], plt) -> str:
    stages = [s for s in _evaluated(report) if _shown_provider(s["metrics"])]
    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    xs = [s["metrics"]["latency"][_shown_provider(s["metrics"])]["p50_ms"] for s in stages]
    # data without labels has no accuracy: plot agreement with the baseline instead
    key = (
        "accuracy" if all(s["metrics"].get("accuracy") is not None for s in stages) else "agreement"
    )
    ys = [(s["metrics"].get(key) or 0.0) * 100 for s in stages]
    axis.plot(xs, ys, "-o", color="#3465a4")
    for index, (stage, x, y) in enumerate(zip(stages, xs, ys)):
        offset = (5, 6) if index % 2 == 0 else (5, -14)  # neighbours often coincide
        axis.annotate(stage["name"], (x, y), textcoords="offset points", xytext=offset)
    shown = _shown_provider(stages[0]["metrics"]) if stages else "none measured"
    axis.set_xlabel(f"p50 latency, ms ({shown})")
    axis.set_ylabel("test accuracy, %" if key == "accuracy" else "agreement with the baseline, %")
    axis.set_title(f"{key.capitalize()} vs latency, teacher to final")
    axis.grid(alpha=0.3)
    uri = _figure_to_data_uri(figure)
    plt.close(figure)
    return uri


def _size_plot(report: dict[str, Any], plt) -> str:
    stages = _evaluated(report)
    figure, axis = plt.subplots(figsize=(6.4, 3.6))
    names = [s["name"] for s in stages]
    raw = [(s["metrics"].get("size_bytes") or 0) / 1000 for s in stages]
    packed = [(s["metrics"].get("size_compressed_bytes") or 0) / 1000 for s in stages]
    positions = range(len(names))
    axis.bar([p - 0.2 for p in positions], raw, width=0.4, label="ONNX file", color="#3465a4")
    axis.bar(
        [p + 0.2 for p in positions], packed, width=0.4, label="zlib-compressed", color="#8ae234"
    )
    axis.set_xticks(list(positions), names)
    axis.set_yscale("log")
    axis.set_ylabel("kB (log scale)")
    axis.set_title("Deployed size per stage")
    axis.legend()
    uri = _figure_to_data_uri(figure)
    plt.close(figure)
    return uri


def _latency_panels(stage: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """'provider, profile' -> latency stats of one stage (one panel per pair)."""
    metrics = stage["metrics"]
    profiles = metrics.get("profiles") or {"": {"latency": metrics["latency"]}}
    panels = {}
    for label, measured in profiles.items():
        for provider, lat in measured["latency"].items():
            panels[f"{provider}, {label}" if label else provider] = lat
    for provider, lat in metrics["latency"].items():  # e.g. the fp16 copy on a GPU
        if not any(key.startswith(f"{provider},") or key == provider for key in panels):
            panels[provider] = lat
    return panels


def _latency_plot(report: dict[str, Any], plt) -> str:
    """Latency distributions per stage: one panel per provider and deployment profile."""
    stages = _evaluated(report)
    panels = list(dict.fromkeys(key for s in stages for key in _latency_panels(s))) or ["cpu"]
    figure, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 3.8), squeeze=False)
    for axis, panel in zip(axes[0], panels):
        boxes = []
        for stage in stages:
            lat = _latency_panels(stage).get(panel)
            if not lat:
                continue
            pct = lat.get("percentiles") or {}
            boxes.append(
                {
                    "label": stage["name"],
                    "whislo": pct.get("p1", lat["p50_ms"]),
                    "q1": pct.get("p25", lat["p50_ms"]),
                    "med": lat["p50_ms"],
                    "q3": pct.get("p75", lat["p90_ms"]),
                    "whishi": lat["p99_ms"],
                    "fliers": [],
                }
            )
        axis.bxp(boxes, showfliers=False)
        axis.set_yscale("log")
        axis.set_ylabel("ms (log scale)")
        axis.set_title(f"Latency, {panel} (p1/p25/p50/p75/p99)")
    uri = _figure_to_data_uri(figure)
    plt.close(figure)
    return uri


def _markdown_tables_to_html(markdown: str) -> str:
    """A small Markdown subset (headings, tables, bullets, paragraphs) rendered to HTML."""
    out, table = [], []

    def flush_table() -> None:
        if not table:
            return
        rows = [r.strip("|").split("|") for r in table if not set(r) <= set("|-: ")]
        head, body = rows[0], rows[1:]
        out.append("<table><thead><tr>")
        out.extend(f"<th>{html.escape(c.strip())}</th>" for c in head)
        out.append("</tr></thead><tbody>")
        for row in body:
            cells = "".join(f"<td>{_inline(c.strip())}</td>" for c in row)
            css = ' class="fail"' if "failed" in row or "error" in "".join(row) else ""
            out.append(f"<tr{css}>{cells}</tr>")
        out.append("</tbody></table>")
        table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
        if line.startswith("# "):
            out.append(f"<h1>{_inline(line[2:])}</h1>")
        elif line.startswith("## "):
            out.append(f"<h2>{_inline(line[3:])}</h2>")
        elif line.startswith("- "):
            css = ' class="fail"' if "FAIL" in line or "error" in line else ""
            out.append(f"<li{css}>{_inline(line[2:])}</li>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    flush_table()
    return "\n".join(out)


def _inline(text: str) -> str:
    escaped = html.escape(text)
    parts = escaped.split("`")
    escaped = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    parts = escaped.split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
tr.fail td, li.fail { color: #a40000; }
.plots img { max-width: 100%; margin: 0.5em 0; border: 1px solid #eee; }
code { background: #f6f6f6; padding: 0 0.2em; }
"""


def render_html(report: dict[str, Any]) -> str:
    """The whole report as one HTML page with embedded plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = []
    if _evaluated(report):
        plots = [_tradeoff_plot(report, plt), _size_plot(report, plt), _latency_plot(report, plt)]
    images = "".join(f'<img src="{uri}" alt="plot">' for uri in plots)
    body = _markdown_tables_to_html(render_markdown(report))
    title = html.escape(f"compress: {report['recipe']['name']} ({report['status']})")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{STYLE}</style></head><body>{body}"
        f"<h2>Plots</h2><div class='plots'>{images}</div></body></html>\n"
    )
