"""Reading a run's report.json back: checked against the report schema first.

`compress report` renders whatever report.json holds, and the file is the user's
to keep, copy and edit. Valid JSON of the wrong shape (`null`, `"stages": "x"`)
used to reach the renderers and end as an internal error with a traceback; here it
is one line naming the file and the first key that is wrong. Only what the
renderers index is required; everything else may be added freely (schema rule:
fields are only added within a version).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Tag, ValidationError

from compress.errors import ArtifactError


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Check(_Open):
    passed: bool
    message: str


class _Range(_Open):
    min: float
    max: float


class _Spread(_Range):  # a speed-up over interleaved rounds
    median: float


class _Latency(_Open):
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    n: int
    percentiles: dict[str, float] | None = None
    throughput: float | None = None
    throughput_rounds: _Range | None = None


class _Profile(_Open):  # one deployment profile (batch, threads) of a stage
    batch: int
    threads: int
    latency: dict[str, _Latency]
    speedup: _Spread | None = None
    speedup_vs_input: _Spread | None = None


class _Metrics(_Open):
    accuracy: float | None = None
    agreement: float | None = None  # plotted instead of accuracy when there is none
    kl_mean: float | None = None
    size_bytes: float | None = None
    size_compressed_bytes: float | None = None
    accuracy_change: float | None = None
    size_ratio: float | None = None
    params: float | None = None
    macs: float | None = None
    primary_provider: str | None = None
    latency: dict[str, _Latency] = {}
    profiles: dict[str, _Profile] = {}
    speedup: _Spread | None = None
    speedup_vs_input: _Spread | None = None


class _PruneStep(_Open):
    step: int
    ratio: float
    params: int
    macs: int
    val_accuracy: float | None = None
    speedup_vs_input: _Spread | None = None
    speedup_vs_previous: _Spread | None = None


class _Recalibration(_Open):  # one BatchNorm recalibration (training/batchnorm.py)
    where: str
    samples: int
    layers: int
    kept: bool
    mean_shift_sd: float
    metric: str | None = None
    before: float | None = None
    after: float | None = None


class _FinetuneSettings(_Open):  # what a prune stage's fine-tune trained with
    source: str
    optimizer: dict[str, Any]


class _Details(_Open):
    steps: list[_PruneStep] | None = None  # a pruning stage's table
    bn_recalibration: list[_Recalibration] | None = None
    finetune_settings: _FinetuneSettings | None = None


class _Stage(_Open):
    name: str
    type: str
    status: str
    dir: str
    metrics: _Metrics | None = None
    budgets: list[_Check] = []
    flags: list[dict[str, Any]] = []
    warnings: list[str] = []
    details: _Details | None = None


class _Output(_Open):
    name: str
    shape: list[Any]


class _ImagePreprocessing(_Open):
    formula: str
    scale: float
    mean: Any
    std: Any


class _TextPreprocessing(_Open):
    tokenizer: str
    max_length: int
    padding_side: str
    pad_id: int
    labels: Any


class _Named(_Open):
    name: str


class _ImageContract(_Open):
    name: str
    dtype: str
    shape: list[Any]
    layout: str
    preprocessing: _ImagePreprocessing
    output: _Output


class _TextContract(_Open):
    inputs: list[_Named]
    shape: list[Any]
    preprocessing: _TextPreprocessing
    output: _Output


def _contract_kind(contract: Any) -> str:
    """The final model's input contract is described by its preprocessing's kind."""
    pre = contract.get("preprocessing") if isinstance(contract, dict) else None
    return "text" if isinstance(pre, dict) and pre.get("kind") == "text" else "image"


class _Final(_Open):
    path: str
    stage: str
    sha256: str
    input: Annotated[
        Annotated[_TextContract, Tag("text")] | Annotated[_ImageContract, Tag("image")],
        Discriminator(_contract_kind),
    ]
    budgets: list[_Check] = []


class _Runtime(_Open):  # how latency was measured, as the report states it
    batch_size: int
    threads: int
    warmup: int
    rounds: int
    repeats: int


class _Recipe(_Open):
    name: str


class _Report(_Open):
    schema_version: int
    compress_version: str
    status: str
    recipe: _Recipe
    finished_at: str
    duration_s: float
    runtime: _Runtime
    environment: dict[str, Any]
    stages: list[_Stage]
    final: _Final | None = None
    failures: list[str] = []


def read_report(run_dir: Path) -> dict[str, Any]:
    """report.json of `run_dir`, as written, once it has the shape the renderers read.

    Raises:
        ArtifactError: naming the file, when it is unreadable, not JSON, or not a
            compress report (with the first wrong key path).

    Example:
        >>> report = read_report(Path("runs/digits"))  # doctest: +SKIP
    """
    path = run_dir / "report.json"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8, not JSON
        raise ArtifactError(f"{path}: unreadable ({exc})") from None
    try:
        _Report.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(the whole file)"
        raise ArtifactError(f"{path}: not a compress report: {where}: {first['msg']}") from None
    return document
