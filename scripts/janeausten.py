"""Jane Austen's six novels as plain UTF-8 text files, from Debian's r-cran-janeaustenr.

The R package keeps its data lazy-loaded: `data/Rdata.rdx` is an RDS file (read with
PyPI's `rdata`) whose `variables` map each object's name to (offset, length) in
`data/Rdata.rdb`; there each object is a 4-byte big-endian uncompressed size and a zlib
stream (`compressed` TRUE; R's bzip2/xz variants put a type byte first and are
refused here) of the object serialized as R does (XDR, "X\\n"), which `rdata` parses.
Each novel is a character vector, one element per line of the Project Gutenberg
text; written joined by "\\n" (NA lines, if any, as empty lines), one file per novel.

scripts/get-llm-extra.sh runs this on the package's files (`dpkg -x`, never installed):

    python scripts/janeausten.py EXTRACTED/usr/lib/R/site-library/janeaustenr/data data/janeausten
"""

from __future__ import annotations

import argparse
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

NOVELS = ("emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice",
          "sensesensibility")  # fmt: skip


def read_index(rdx: Path) -> dict[str, tuple[int, int]]:
    """Object name -> (offset, length) in the .rdb, from the lazy-load index."""
    import rdata

    index = rdata.read_rds(rdx)
    compressed = np.asarray(index.get("compressed")).ravel()
    # logical TRUE is zlib; R writes 2 (bzip2) or 3 (xz) as integers
    if compressed.dtype.kind != "b" or not compressed.all():
        raise ValueError(f"{rdx}: compressed = {compressed.tolist()}; only zlib (TRUE) is read")
    return {str(name): (int(span[0]), int(span[1])) for name, span in index["variables"].items()}


def read_object(rdb: Path, offset: int, length: int):
    """One object of the .rdb, converted to Python by rdata (a character vector:
    a numpy array of str)."""
    import rdata

    with rdb.open("rb") as handle:
        handle.seek(offset)
        blob = handle.read(length)
    if len(blob) != length or length < 4:
        raise ValueError(f"{rdb}: truncated at offset {offset} ({len(blob)} of {length} bytes)")
    (size,) = struct.unpack(">I", blob[:4])
    payload = zlib.decompress(blob[4:])
    if len(payload) != size:
        raise ValueError(f"{rdb}: object at {offset} inflates to {len(payload)} bytes, not {size}")
    return rdata.conversion.convert(rdata.parser.parse_data(payload, extension=".rds"))


def novel_text(lines) -> str:
    """The lines of one novel as one text, "\\n" between lines and at the end."""
    return "\n".join("" if line is None else str(line) for line in lines) + "\n"


def extract(data_dir: Path, out_dir: Path) -> list[tuple[Path, int, int, bool]]:
    """Write every novel of `data_dir` (Rdata.rdb + Rdata.rdx) into `out_dir` as
    NAME.txt; returns (path, lines, characters, written) with written False when the
    file already held exactly that text (running twice changes nothing)."""
    index = read_index(data_dir / "Rdata.rdx")
    missing = [name for name in NOVELS if name not in index]
    if missing:
        raise ValueError(f"{data_dir}: no {', '.join(missing)} in Rdata.rdx (has {sorted(index)})")
    out_dir.mkdir(parents=True, exist_ok=True)
    done = []
    for name in NOVELS:
        lines = read_object(data_dir / "Rdata.rdb", *index[name])
        text = novel_text(lines)
        path = out_dir / f"{name}.txt"
        fresh = not path.is_file() or path.read_text(encoding="utf-8") != text
        if fresh:
            temporary = path.with_name(f".{path.name}.tmp")
            temporary.write_text(text, encoding="utf-8", newline="\n")
            temporary.replace(path)
        done.append((path, len(lines), len(text), fresh))
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path, help="janeaustenr's data/ folder")
    parser.add_argument("out_dir", type=Path, help="where NAME.txt files go")
    args = parser.parse_args(argv)
    try:
        done = extract(args.data_dir, args.out_dir)
    except (OSError, ValueError, zlib.error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path, lines, characters, fresh in done:
        state = "wrote" if fresh else "unchanged"
        print(f"{state:9} {path}: {lines:,} lines, {characters:,} characters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
