"""Library warnings and log lines land in the run's log file, not on the console."""

from __future__ import annotations

import logging
import warnings

import pytest

from compress.pipeline.library_log import library_log

pytestmark = pytest.mark.unit


def test_library_logging_and_warnings_go_to_the_file_only(tmp_path, capfd):
    path = tmp_path / "run" / "compress.log"
    before = list(logging.getLogger().handlers)

    with library_log(path):
        logging.warning("Please consider to run pre-processing before quantization")
        logging.getLogger("torch_pruning").warning("Unwrapped parameters detected")
        warnings.warn("a library's deprecation", UserWarning, stacklevel=1)

    out, err = capfd.readouterr()
    text = path.read_text(encoding="utf-8")
    assert "pre-processing" not in out + err and "Unwrapped" not in out + err
    assert "a library's deprecation" not in out + err
    assert "Please consider to run pre-processing" in text
    assert "torch_pruning: Unwrapped parameters detected" in text
    assert "a library's deprecation" in text
    assert logging.getLogger().handlers == before  # nothing of ours left behind


def test_debug_also_shows_them_on_the_console(tmp_path, capfd):
    with library_log(tmp_path / "compress.log", debug=True):
        logging.warning("shown under --debug")

    assert "shown under --debug" in capfd.readouterr().err
    assert "shown under --debug" in (tmp_path / "compress.log").read_text(encoding="utf-8")
