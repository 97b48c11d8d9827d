"""report.html: one self-contained page (plots embedded as PNG data URIs), no code needed.

Plots: the accuracy-latency path from teacher to final model, deployed size per
stage, and the latency distribution of every stage on every provider.
"""

from __future__ import annotations

import base64
import html
import io

from compress.report.markdown import render_markdown
from compress.report.records import Latency, Metrics, Report, StageRecord


def _figure_to_data_uri(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _evaluated(report: Report) -> list[StageRecord]:
    return [s for s in report.stages if s.metrics is not None]


def _shown_provider(metrics: Metrics) -> str | None:
    """The primary provider, or the first measured one when the primary was unavailable."""
    primary = metrics.primary_provider
    return primary if primary in metrics.latency else next(iter(metrics.latency), None)


def _tradeoff_plot(report: Report, plt) -> str:
    stages = [s for s in _evaluated(report) if _shown_provider(s.metrics)]
    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    xs = [s.metrics.latency[_shown_provider(s.metrics)].p50_ms for s in stages]
    # data without labels has no accuracy: plot agreement with the baseline instead
    key = "accuracy" if all(s.metrics.accuracy is not None for s in stages) else "agreement"
    ys = [(getattr(s.metrics, key) or 0.0) * 100 for s in stages]
    axis.plot(xs, ys, "-o", color="#3465a4")
    for index, (stage, x, y) in enumerate(zip(stages, xs, ys)):
        offset = (5, 6) if index % 2 == 0 else (5, -14)  # neighbours often coincide
        axis.annotate(stage.name, (x, y), textcoords="offset points", xytext=offset)
    shown = _shown_provider(stages[0].metrics) if stages else "none measured"
    axis.set_xlabel(f"p50 latency, ms ({shown})")
    axis.set_ylabel("test accuracy, %" if key == "accuracy" else "agreement with the baseline, %")
    axis.set_title(f"{key.capitalize()} vs latency, teacher to final")
    axis.grid(alpha=0.3)
    uri = _figure_to_data_uri(figure)
    plt.close(figure)
    return uri


def _size_plot(report: Report, plt) -> str:
    stages = _evaluated(report)
    figure, axis = plt.subplots(figsize=(6.4, 3.6))
    names = [s.name for s in stages]
    raw = [(s.metrics.size_bytes or 0) / 1000 for s in stages]
    packed = [(s.metrics.size_compressed_bytes or 0) / 1000 for s in stages]
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


def _latency_panels(stage: StageRecord) -> dict[str, Latency]:
    """'provider, profile' -> latency stats of one stage (one panel per pair)."""
    metrics = stage.metrics
    panels = {}
    if metrics.profiles:
        for label, measured in metrics.profiles.items():
            for provider, lat in measured.latency.items():
                panels[f"{provider}, {label}"] = lat
    else:
        panels.update(metrics.latency)
    for provider, lat in metrics.latency.items():  # e.g. the fp16 copy on a GPU
        if not any(key.startswith(f"{provider},") or key == provider for key in panels):
            panels[provider] = lat
    return panels


def _latency_plot(report: Report, plt) -> str:
    """Latency distributions per stage: one panel per provider and deployment profile."""
    stages = _evaluated(report)
    panels = list(dict.fromkeys(key for s in stages for key in _latency_panels(s))) or ["cpu"]
    figure, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 3.8), squeeze=False)
    for axis, panel in zip(axes[0], panels):
        boxes = []
        for stage in stages:
            lat = _latency_panels(stage).get(panel)
            if lat is None:
                continue
            pct = lat.percentiles or {}
            boxes.append(
                {
                    "label": stage.name,
                    "whislo": pct.get("p1", lat.p50_ms),
                    "q1": pct.get("p25", lat.p50_ms),
                    "med": lat.p50_ms,
                    "q3": pct.get("p75", lat.p90_ms),
                    "whishi": lat.p99_ms,
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


def _failing(tokens, start: int, close: str, words: tuple[str, ...], whole: bool) -> bool:
    """Whether the inline text between tokens[start] and its `close` token says a
    failure: a cell that is one of `words` (whole) or text containing one of them."""
    for token in tokens[start + 1 :]:
        if token.type == close:
            return False
        if token.type == "inline":
            text = token.content.strip()
            if any(text == word if whole else word in text for word in words):
                return True
    return False


def markdown_to_html(markdown: str) -> str:
    """Markdown (CommonMark and tables; raw HTML escaped, never passed through) as
    HTML, with failed stages' rows and failed budgets' items marked `class="fail"`."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(markdown)
    marks = {  # token that opens -> (its close, words that say a failure, whole cell?)
        "tr_open": ("tr_close", ("failed", "error"), True),
        "list_item_open": ("list_item_close", ("FAIL", "error"), False),
    }
    for index, token in enumerate(tokens):
        if token.type in marks and _failing(tokens, index, *marks[token.type]):
            token.attrSet("class", "fail")
    return md.renderer.render(tokens, md.options, {})


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
tr.fail td, li.fail { color: #a40000; }
.plots img { max-width: 100%; margin: 0.5em 0; border: 1px solid #eee; }
code { background: #f6f6f6; padding: 0 0.2em; }
"""


def render_html(report: Report) -> str:
    """The whole report as one HTML page with embedded plots.

    Example:
        >>> page = render_html(read_report(Path("runs/digits")))  # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = []
    if _evaluated(report):
        plots = [_tradeoff_plot(report, plt), _size_plot(report, plt), _latency_plot(report, plt)]
    images = "".join(f'<img src="{uri}" alt="plot">' for uri in plots)
    body = markdown_to_html(render_markdown(report))
    title = html.escape(f"compress: {report.recipe.name} ({report.status})")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{STYLE}</style></head><body>{body}"
        f"<h2>Plots</h2><div class='plots'>{images}</div></body></html>\n"
    )
