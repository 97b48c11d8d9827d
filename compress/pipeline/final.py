"""`final/`: the shipped model, what a user needs to feed it, and its contract.

`final/model.onnx` is the last good stage's model; `final/model.contract.json` is the
report's input contract (inputs, preprocessing, output). Tokenized-text models also
get their tokenizer files (tokenizer.json and its siblings) beside the model, which
the contract names, so the folder alone is enough to run the model on new texts.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from compress.artifacts import atomic_path, atomic_write_json, sha256_file
from compress.report.records import Final, StageRecord


def write_final(out_dir: Path, last: StageRecord, report, signature) -> Final:
    """Copy the last good stage's model (and tokenizer files) to final/, write the
    contract; return the report's `final` entry (its budgets checked)."""
    folder = out_dir / "final"
    target = folder / "model.onnx"
    with atomic_path(target) as tmp:
        shutil.copyfile(out_dir / last.artifacts.onnx, tmp)
    text = getattr(report.data, "text", None)
    for source in getattr(text, "ship", []):
        with atomic_path(folder / source.name) as tmp:
            shutil.copyfile(source, tmp)
    final = report.finalize(last, str(target.relative_to(out_dir)), sha256_file(target), signature)
    atomic_write_json(folder / "model.contract.json", final.input.to_json())
    return final
