"""Reading a run's report.json back: checked against the report's types first.

`compress report` renders whatever report.json holds, and the file is the user's
to keep, copy and edit. Valid JSON of the wrong shape (`null`, `"stages": "x"`)
used to reach the renderers and end as an internal error with a traceback; here it
is one line naming the file and the first key that is wrong. The types are the ones
the runner writes (`report.records`); everything they do not declare may be added
freely (schema rule: fields are only added within a version).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from compress.errors import ArtifactError
from compress.report.records import Report


def read_report(run_dir: Path) -> Report:
    """report.json of `run_dir`, typed, once it has the shape the renderers read.

    Raises:
        ArtifactError: naming the file, when it is unreadable, not JSON, or not a
            compress report (with the first wrong key path).

    Example:
        >>> report = read_report(Path("runs/digits"))  # doctest: +SKIP
        >>> report.stages[0].metrics.accuracy  # doctest: +SKIP
        0.975
    """
    path = run_dir / "report.json"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8, not JSON
        raise ArtifactError(f"{path}: unreadable ({exc})") from None
    try:
        return Report.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(the whole file)"
        raise ArtifactError(f"{path}: not a compress report: {where}: {first['msg']}") from None
