"""`final/`: the shipped model, what a user needs to feed it, and its contract.

`final/model.onnx` is the last good stage's model; `final/model.contract.json` is the
report's input contract (inputs, preprocessing, output). Tokenized-text models also
get their tokenizer files (tokenizer.json and its siblings) beside the model, which
the contract names, so the folder alone is enough to run the model on new texts; and
a model family may name files of its own to ship (`ModelFamily.shipped_files`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from compress.artifacts import atomic_path, atomic_write_json, sha256_file
from compress.models.checkpoint import spec_from_meta
from compress.models.family import family_of
from compress.report.records import Final, StageRecord


def write_final(out_dir: Path, last: StageRecord, report, signature) -> Final:
    """Copy the last good stage's model (and tokenizer files) to final/, write the
    contract; return the report's `final` entry (its budgets checked)."""
    folder = out_dir / "final"
    target = folder / "model.onnx"
    with atomic_path(target) as tmp:
        shutil.copyfile(out_dir / last.artifacts.onnx, tmp)
    text = getattr(report.data, "text", None)
    for source in [*getattr(text, "ship", []), *family_files(out_dir, last)]:
        with atomic_path(folder / source.name) as tmp:
            shutil.copyfile(source, tmp)
    final = report.finalize(last, str(target.relative_to(out_dir)), sha256_file(target), signature)
    atomic_write_json(folder / "model.contract.json", final.input.to_json())
    return final


def family_files(out_dir: Path, last: StageRecord) -> list[Path]:
    """The files the last good model's family ships beside it (none for a model that
    is an ONNX file only: it has no family)."""
    structure = last.artifacts.structure
    if not structure:
        return []
    path = out_dir / structure
    spec = spec_from_meta(json.loads(path.read_text(encoding="utf-8")), str(path))
    return family_of(spec.config).shipped_files(spec.config)
