"""scripts/janeausten.py: R's lazy-load data (an .rdx index, zlib blobs in an .rdb) read
with rdata, on a tiny package built here with rdata's own writer; and, where
scripts/get-llm-extra.sh has run, the six real novels."""

from __future__ import annotations

import importlib.util
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

rdata = pytest.importorskip("rdata")

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
_SPEC = importlib.util.spec_from_file_location("janeausten", ROOT / "scripts" / "janeausten.py")
janeausten = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(janeausten)


def _serialized(lines: list[str]) -> bytes:
    """A character vector as R serializes it (XDR, version 3), which rdata writes."""
    from rdata.conversion import convert_python_to_r_data
    from rdata.unparser import unparse_data

    vector = convert_python_to_r_data(np.array(lines, dtype=object), file_type="rds")
    return unparse_data(vector, file_format="xdr")


def write_lazyload(folder: Path, objects: dict[str, list[str]], compressed=True) -> Path:
    """Rdata.rdb + Rdata.rdx as R's lazy-load database writes them (zlib blobs)."""
    folder.mkdir(parents=True, exist_ok=True)
    blob, spans = b"", {}
    for name, lines in objects.items():
        payload = _serialized(lines)
        entry = struct.pack(">I", len(payload)) + zlib.compress(payload)
        spans[name] = np.array([len(blob), len(entry)], dtype=np.int32)
        blob += entry
    (folder / "Rdata.rdb").write_bytes(blob)
    index = {"variables": spans, "references": {}, "compressed": compressed}
    rdata.write_rds(folder / "Rdata.rdx", index)
    return folder


def _novels() -> dict[str, list[str]]:
    return {name: [name.upper(), "", f"Chapter 1 of {name}, caf\u00e9.", "The end."]
            for name in reversed(janeausten.NOVELS)}  # fmt: skip


def test_every_novel_becomes_its_lines_as_utf8_text_and_a_rerun_changes_nothing(tmp_path):
    data = write_lazyload(tmp_path / "data", {**_novels(), "other": ["not a novel"]})

    done = janeausten.extract(data, tmp_path / "out")

    assert [p.name for p, *_ in done] == [f"{n}.txt" for n in janeausten.NOVELS]
    emma = (tmp_path / "out" / "emma.txt").read_bytes().decode("utf-8")
    assert emma == "EMMA\n\nChapter 1 of emma, caf\u00e9.\nThe end.\n"
    assert done[0][1:] == (4, len(emma), True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        f"{n}.txt" for n in janeausten.NOVELS
    )
    again = janeausten.extract(data, tmp_path / "out")
    assert not any(fresh for *_, fresh in again)


def test_a_missing_novel_or_another_compression_is_refused(tmp_path):
    partial = {k: v for k, v in _novels().items() if k != "persuasion"}
    with pytest.raises(ValueError, match="no persuasion in Rdata.rdx"):
        janeausten.extract(write_lazyload(tmp_path / "a", partial), tmp_path / "out")
    xz = write_lazyload(tmp_path / "b", _novels(), compressed=np.array([3], dtype=np.int32))
    with pytest.raises(ValueError, match=r"compressed = \[3\]; only zlib"):
        janeausten.extract(xz, tmp_path / "out")


def test_the_cli_prints_lines_and_characters(tmp_path, capsys):
    data = write_lazyload(tmp_path / "data", _novels())

    assert janeausten.main([str(data), str(tmp_path / "out")]) == 0
    assert janeausten.main([str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 1

    out, err = capsys.readouterr()
    assert "wrote     " in out and "emma.txt: 4 lines, 40 characters" in out
    assert err.startswith("error: ") and "nowhere" in err


REAL = ROOT / "data" / "janeausten"


@pytest.mark.skipif(not (REAL / "emma.txt").is_file(), reason="scripts/get-llm-extra.sh not run")
def test_the_installed_novels_are_the_six_whole_texts():
    sizes = {n: len((REAL / f"{n}.txt").read_text(encoding="utf-8")) for n in janeausten.NOVELS}

    assert min(sizes.values()) > 400_000 and sum(sizes.values()) > 3_900_000
    assert (REAL / "emma.txt").read_text(encoding="utf-8").startswith("EMMA\n\nBy Jane Austen")
