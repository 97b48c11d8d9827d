"""The stage cache: reuse a stage's verified artifacts when nothing it depends on changed.

A stage's key hashes its config (budgets and name left out: changing a budget
re-checks the cached metrics instead of retraining), its input (the recipe's model
table and weights for the first stage, the previous stage's artifact hashes after
that), the data, the runtime settings, the seed, the training strategy and the
compress version. A hit is used only after every recorded artifact hash matches.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch
from pydantic import ValidationError

import compress
from compress.artifacts import atomic_write_json, sha256_file
from compress.errors import CompressError
from compress.recipe.loader import Recipe
from compress.report.records import StageRecord
from compress.stages import StageResult


def initial_input_hash(recipe: Recipe) -> str:
    """What the first stage's input is: the model table (+ its weights or ONNX file), hashed."""
    start = recipe.model.model_dump_json()
    onnx_file = getattr(recipe.model, "onnx", None)
    if onnx_file:
        start += sha256_file(onnx_file) if Path(onnx_file).is_file() else "missing"
    elif recipe.model.weights:
        weights = Path(recipe.model.weights)
        weights = weights / "model.safetensors" if weights.is_dir() else weights
        start += sha256_file(weights) if weights.is_file() else "missing"
    return hashlib.sha256(start.encode()).hexdigest()


def chained_input_hash(artifacts: dict[str, str]) -> str:
    """The next stage's input hash: the artifact hashes a stage recorded."""
    return hashlib.sha256("".join(artifacts.values()).encode()).hexdigest()


def _record_digest(record: dict) -> str:
    content = {k: v for k, v in record.items() if k != "record_sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


class StageCache:
    """Keys, lookups and epoch-checkpoint folders of one run directory.

    Args:
        out_dir: the run directory.
        enabled: False (`--no-cache`) never reuses a stage nor keeps epoch states.
    """

    def __init__(self, out_dir: Path, enabled: bool = True):
        self.out_dir = out_dir
        self.enabled = enabled

    def key(self, config, input_hash: str, recipe: Recipe, data, strategy) -> str:
        """Content hash of everything a stage's artifact and metrics depend on."""
        payload = {
            "stage": config.model_dump(mode="json", exclude={"budgets", "name"}),
            "input": input_hash,
            "data": data.identity,
            "data_config": recipe.data.model_dump(mode="json"),
            "runtime": recipe.runtime.model_dump(mode="json"),
            "seed": recipe.seed,
            "torch_threads": torch.get_num_threads(),
            "distributed": strategy.identity(),
            "training": strategy.placement.identity(),
            "compress": compress.__version__,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def lookup(self, stage_dir: Path, key: str) -> tuple[StageResult, StageRecord] | str | None:
        """A verified earlier result for this key; a reason string if one exists but is
        unusable (corrupt or truncated artifact); None if there is none."""
        from compress.models import load_model

        path = stage_dir / "metrics.json"
        if not self.enabled or not path.is_file():
            return None
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return "metrics.json unreadable"
        if not isinstance(old, dict):
            return "metrics.json is not a stage record"
        cache = old.get("cache") or {}
        if cache.get("key") != key or old.get("status") == "error":
            return None
        if old.get("record_sha256") != _record_digest(old):
            # the measurements themselves are reused: an edit must not pass for them
            return "metrics.json does not match its recorded hash"
        for rel, digest in cache.get("artifacts", {}).items():
            artifact = self.out_dir / rel
            if not artifact.is_file() or sha256_file(artifact) != digest:
                return f"{rel} does not match its recorded hash"
        try:
            content = {k: v for k, v in old.items() if k != "record_sha256"}
            record = StageRecord.model_validate(content)
        except ValidationError:
            return "metrics.json is not a stage record"
        if record.metrics is None or record.artifacts is None:
            return "metrics.json is not a stage record"
        model = spec = None  # an ONNX-input recipe's stage: its file is the model
        if record.artifacts.weights is not None:
            try:
                model, spec = load_model(stage_dir)
            except CompressError as exc:
                return str(exc)
        onnx_path = self.out_dir / record.artifacts.onnx
        onnx_only = onnx_path if record.artifacts.onnx_only else None
        result = StageResult(model, spec, onnx_only, old.get("details") or {},
                             warnings=list(record.warnings))  # fmt: skip
        return result, record

    @staticmethod
    def seal(stage_dir: Path, record: StageRecord) -> None:
        """Write metrics.json with a hash of its own content, so `lookup` reuses the
        measurements only as they were written. Written last: its recorded artifact
        hashes are what makes the folder reusable."""
        content = record.to_json()
        atomic_write_json(
            stage_dir / "metrics.json", {**content, "record_sha256": _record_digest(content)}
        )

    def artifact_hashes(self, stage_dir: Path) -> dict[str, str]:
        """Every file of a finished stage folder but metrics.json, by relative path."""
        return {
            str(path.relative_to(self.out_dir)): sha256_file(path)
            for path in sorted(stage_dir.iterdir())
            if path.is_file() and path.name != "metrics.json"
        }

    def resume_dir(self, name: str, key: str) -> Path | None:
        """The folder for this stage's epoch checkpoints (outside the stage folder,
        which a re-run clears), named by the cache key so that a changed config or
        input never resumes from another run's epochs."""
        if not self.enabled:
            return None
        root = self.out_dir / ".resume"
        folder = root / f"{name}-{key[:16]}"
        for stale in root.glob(f"{name}-*"):
            if stale != folder:
                shutil.rmtree(stale, ignore_errors=True)
        return folder

    @staticmethod
    def spend(resume_dir: Path | None) -> None:
        """A stage is whole: its epoch states are no longer needed."""
        if resume_dir is not None:
            shutil.rmtree(resume_dir, ignore_errors=True)
