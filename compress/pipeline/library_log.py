"""Library warnings and log lines go to the run folder, not the user's terminal.

ONNX Runtime's quantization tooling logs through the root logger ("Please consider
to run pre-processing before quantization", "Axis 1 is out-of-range for weight"),
Torch-Pruning warns about unwrapped parameters, torch about deprecations: none of it
is something the user can act on, and it buried what compress had to say. It is kept
whole in `<run>/compress.log`; `--debug` shows it on the console as well.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

LOG_FILE = "compress.log"


@contextlib.contextmanager
def library_log(path: Path, debug: bool = False) -> Iterator[Path]:
    """Route `logging` and `warnings` to `path` (appending) for the block's duration.

    Args:
        path: the log file (its folder is created).
        debug: also print them on stderr, as they come.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    handlers: list[logging.Handler] = [logging.FileHandler(path, encoding="utf-8")]
    if debug:
        handlers.append(logging.StreamHandler(sys.stderr))
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    # a handler on the root logger also stops logging's last-resort printing to stderr
    level = root.level
    root.setLevel(min(level or logging.WARNING, logging.WARNING))
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # each distinct warning once per place
        logging.captureWarnings(True)
        try:
            yield path
        finally:
            logging.captureWarnings(False)
            for handler in handlers:
                root.removeHandler(handler)
                handler.close()
            root.setLevel(level)
