"""The typed records of a run: what the runner and the measurement write and what the
report, its renderers and tracking read (docs/report-schema.md, version 2).

One set of types on both sides, so a key is spelled in one place. Every type allows
keys it does not declare (schema rule: fields are only added within a version), and
a record is written with the keys it was given (`to_json`: `exclude_unset`), so
report.json keeps the shape old run folders have. Stage-specific `details` stay a
free table; only the keys the renderers read are typed.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Tag


class Record(BaseModel):
    """Base of every record type: undeclared keys are kept, written as given."""

    model_config = ConfigDict(extra="allow")

    def to_json(self) -> dict[str, Any]:
        """Plain data with the keys this record was given (json.dumps writes NaN as
        before; pydantic's JSON mode would turn an undeclared NaN into null)."""
        return self.model_dump(exclude_unset=True)


class Range(Record):
    """Items per second of the slowest and the fastest round."""

    min: float
    max: float


class Spread(Range):
    """A speed-up: reference p50 / this p50 per interleaved round; median and spread."""

    median: float
    rounds: int | None = None


class Latency(Record):
    """One model on one provider (`runtime.latency.LatencyStats.to_dict`)."""

    provider: str | None = None
    threads: int | None = None
    batch_size: int | None = None
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    n: int
    round_p50_ms: list[float] | None = None
    percentiles: dict[str, float] | None = None
    other_load: list[float] | None = None
    disturbed_rounds: int | None = None
    throughput: float | None = None
    throughput_rounds: Range | None = None


class Profile(Record):
    """One deployment profile (batch, threads) of a stage's measurement."""

    batch: int
    threads: int
    latency: dict[str, Latency]
    speedup: Spread | None = None
    teacher_p50_ms_interleaved: float | None = None
    speedup_vs_input: Spread | None = None
    input_p50_ms_interleaved: float | None = None
    slower_than_input: bool | None = None
    # a language model's generation profile: decode tokens/s of the references
    teacher_decode_tokens_per_s_interleaved: float | None = None
    input_decode_tokens_per_s_interleaved: float | None = None


class Metrics(Record):
    """A stage's deployed file, measured (`pipeline.measure.Measurement.evaluate`).

    The top-level latency and speed-ups are the first deployment profile's.
    """

    accuracy: float | None = None
    agreement: float | None = None  # plotted instead of accuracy when there is none
    kl_mean: float | None = None
    size_bytes: int | None = None
    size_compressed_bytes: int | None = None
    params: int | None = None
    macs: int | None = None
    macs_onnx: int | None = None  # the deployed float graph's count (torch's check)
    primary_provider: str | None = None
    providers_unavailable: dict[str, str] | None = None
    latency: dict[str, Latency] = {}
    profiles: dict[str, Profile] = {}
    speedup: Spread | None = None
    teacher_p50_ms_interleaved: float | None = None
    speedup_vs_input: Spread | None = None
    input_p50_ms_interleaved: float | None = None
    slower_than_input: bool | None = None
    slower_profiles: list[str] | None = None
    size_ratio: float | None = None
    accuracy_change: float | None = None
    # language models (task causal-lm, `pipeline.lm_measure`): perplexity on the test
    # windows and its increase relative to the baseline's; prefill and decode speed at
    # the generation profile (`generation`), whose speed-ups are `speedup` above
    perplexity: float | None = None
    perplexity_tokens: int | None = None
    perplexity_increase: float | None = None
    prefill_ms: float | None = None
    decode_tokens_per_s: float | None = None
    teacher_decode_tokens_per_s_interleaved: float | None = None
    input_decode_tokens_per_s_interleaved: float | None = None
    generation: dict[str, Any] | None = None

    @property
    def provider(self) -> str:
        """The provider budgets and tables read (cpu when the record does not say)."""
        return self.primary_provider or "cpu"

    def primary_latency(self) -> Latency | None:
        return self.latency.get(self.provider)


class BudgetResult(Record):
    """One budget checked against one model (`budgets.BudgetCheck`)."""

    metric: str
    limit: float | None = None
    value: float | None = None
    passed: bool
    message: str
    baseline: float | None = None
    skipped: bool = False


class Flag(Record):
    """What no budget gates but a person should know: slower than its input."""

    kind: str
    input_stage: str | None = None
    profile: str | None = None
    accepted: float | None = None
    message: str


class CacheInfo(Record):
    """What reuse of a stage's folder is verified against."""

    key: str
    hit: bool
    artifacts: dict[str, str] = {}


class Artifacts(Record):
    """The stage's files, relative to the run directory."""

    onnx: str
    weights: str | None = None
    structure: str | None = None
    onnx_only: bool = False


class PruneStep(Record):
    """One row of a pruning stage's step table."""

    step: int
    ratio: float
    params: int
    macs: int
    val_accuracy: float | None = None
    step_p50_ms: float | None = None
    latency_p50_ms: float | None = None  # before step_p50_ms had its name
    speedup_vs_input: Spread | None = None
    speedup_vs_previous: Spread | None = None
    slower_than_previous: bool | None = None


class Recalibration(Record):
    """One BatchNorm recalibration (training/batchnorm.py)."""

    where: str
    samples: int
    layers: int
    kept: bool
    mean_shift_sd: float
    metric: str | None = None
    before: float | None = None
    after: float | None = None
    # validation rows the new statistics got right and the old wrong, and the reverse;
    # the one-sided sign-test p-value the keep rule read (absent in older reports)
    improved: int | None = None
    worsened: int | None = None
    p_value: float | None = None


class FinetuneSettings(Record):
    """What a prune stage's fine-tune trained with, and where that came from."""

    source: str
    optimizer: dict[str, Any]


class Details(Record):
    """A stage's own facts (free); typed are only the keys report.md reads."""

    steps: list[PruneStep] | None = None
    bn_recalibration: list[Recalibration] | None = None
    finetune_settings: FinetuneSettings | None = None
    method: str | None = None
    importance: str | None = None
    stopped: str | None = None
    kept_step: int | None = None


StageStatus = Literal["passed", "failed", "error"]


class StageRecord(Record):
    """One stage of a run as report.json and the stage's metrics.json hold it.

    Example:
        >>> record = StageRecord(name="train", type="train", dir="train", status="error",
        ...                      error="stage 'train': boom")
        >>> record.to_json()["status"]
        'error'
    """

    name: str
    type: str
    dir: str
    cache_rejected: str | None = None
    cached: bool | None = None
    cache: CacheInfo | None = None
    status: StageStatus
    error: str | None = None
    duration_s: float | None = None
    metrics: Metrics | None = None
    budgets: list[BudgetResult] = []
    flags: list[Flag] = []
    warnings: list[str] = []
    details: Details | None = None
    artifacts: Artifacts | None = None


class Output(Record):
    name: str
    shape: list[Any]


class ImagePreprocessing(Record):
    formula: str
    scale: float
    mean: Any
    std: Any


class TextPreprocessing(Record):
    kind: Literal["text"]
    tokenizer: str
    max_length: int
    padding_side: str
    pad_id: int
    labels: Any


class Named(Record):
    name: str


class ImageContract(Record):
    """How to feed an image (or feature) model without compress."""

    name: str
    dtype: str
    shape: list[Any]
    layout: str
    preprocessing: ImagePreprocessing
    output: Output


class TextContract(Record):
    """How to feed a tokenized-text model: the tokenizer shipped beside it."""

    inputs: list[Named]
    shape: list[Any]
    preprocessing: TextPreprocessing
    output: Output


class LMContract(Record):
    """How to run a language model folder: its files and how to generate from them."""

    task: Literal["causal-lm"]
    inputs: list[Named]
    files: list[str]
    preprocessing: dict[str, Any]
    generate: dict[str, Any]
    output: Output


def _contract_kind(contract: Any) -> str:
    """The final model's input contract is described by its preprocessing's kind."""
    if isinstance(contract, BaseModel):
        contract = contract.model_dump()
    pre = contract.get("preprocessing") if isinstance(contract, dict) else None
    kind = pre.get("kind") if isinstance(pre, dict) else None
    return kind if kind in ("text", "causal-lm") else "image"


Contract = Annotated[
    Annotated[TextContract, Tag("text")]
    | Annotated[LMContract, Tag("causal-lm")]
    | Annotated[ImageContract, Tag("image")],
    Discriminator(_contract_kind),
]


class Final(Record):
    """The shipped model: its file, the stage it came from, its contract and budgets."""

    path: str
    sha256: str
    stage: str
    input: Contract
    metrics: Metrics
    budgets: list[BudgetResult] = []


class RunError(Record):
    """The error that ended a run (stage None: before any stage ran)."""

    stage: str | None = None
    type: str | None = None
    message: str
    traceback: str | None = None


class RecipeFacts(Record):
    name: str
    path: str | None = None
    resolved: dict[str, Any] | None = None


class RuntimeFacts(Record):
    """How latency was measured, as the report states it (the `[runtime]` table)."""

    batch_size: int
    threads: int
    warmup: int
    rounds: int
    repeats: int


class Report(Record):
    """report.json: the whole run (docs/report-schema.md)."""

    schema_version: int
    compress_version: str
    status: Literal["passed", "failed", "error", "running"]
    exit_code: int | None = None
    recipe: RecipeFacts
    seed: int | None = None
    started_at: str | None = None
    finished_at: str
    duration_s: float
    environment: dict[str, Any]
    runtime: RuntimeFacts
    distributed: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    teacher_stage: str | None = None
    stages: list[StageRecord]
    final: Final | None = None
    best_stage: str | None = None
    best_stage_path: str | None = None
    failures: list[str] = []
    warnings: list[str] = []
    error: RunError | None = None
    paths: dict[str, str] | None = None
