"""A transformers causal LM -> an ONNX folder with its KV cache that onnxruntime-genai runs.

The graph comes from onnxruntime-genai's model builder (fused GroupQueryAttention,
q/k/v packed into one `qkv_proj` MatMul, rotary caches), run in this process: it
takes 0.2 s on the tiny test model where a `python -m` subprocess spends ~7 s
importing torch again. What it writes is reshaped into the folder every consumer
reads (docs: the exported folder `D`):

    D/model.onnx          one file, weights inside (the builder writes a side
                          model.onnx.data; kept only for models over protobuf's 2 GB)
    D/genai_config.json   decoder.filename = model.onnx, intra-op threads set
    D/tokenizer*.json ... the tokenizer files onnxruntime-genai reads

The folder is written beside its destination and renamed into place, so an
interrupted export leaves no half-written `D`.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from compress.artifacts import atomic_write_text
from compress.errors import StageError, UsageError

GENAI_CONFIG = "genai_config.json"
MODEL_FILE = "model.onnx"
# protobuf refuses messages of 2 GiB and more; headroom for the graph itself
_SINGLE_FILE_BYTES = 2**31 - 2**26
_OUTPUT_TAIL = 1500


def export_causal_lm(model, tokenizer_dir: Path, out_dir: Path, *, threads: int = 1) -> Path:
    """Export `model` (fp32, eval mode) with its KV cache to the folder `out_dir`.

    Args:
        model: a transformers causal LM the builder supports (Llama, Mistral, Qwen, ...).
        tokenizer_dir: the folder its tokenizer loads from (AutoTokenizer).
        out_dir: the exported folder; replaced if it exists.
        threads: intra-op threads written to genai_config.json.

    Returns:
        out_dir / "model.onnx".

    Raises:
        StageError: the builder failed (its message and last output lines included).

    Example:
        >>> export_causal_lm(model, Path("hf"), Path("onnx"))  # doctest: +SKIP
        PosixPath('onnx/model.onnx')
    """
    from transformers import AutoTokenizer

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.hf.") as tmp:
        hf_dir = Path(tmp)
        model.save_pretrained(hf_dir)
        AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(hf_dir)
        generation = Path(tokenizer_dir) / "generation_config.json"
        if generation.is_file() and not (hf_dir / generation.name).exists():
            shutil.copyfile(generation, hf_dir / generation.name)
        return build_onnx_folder(hf_dir, out_dir, precision="fp32", threads=threads)


def build_onnx_folder(
    hf_dir: Path,
    out_dir: Path,
    *,
    precision: str = "fp32",
    extra_options: dict[str, str] | None = None,
    threads: int = 1,
) -> Path:
    """Run onnxruntime-genai's builder (`-e cpu`) on a Hugging Face folder and write
    the exported folder `out_dir` (single-file model.onnx, genai_config.json,
    tokenizer files) atomically.

    Args:
        hf_dir: a Hugging Face model folder with its tokenizer files.
        out_dir: destination folder; replaced if it exists.
        precision: the builder's `-p`: "fp32", "int8" or "int4".
        extra_options: the builder's `--extra_options` KEY=VALUE pairs.
        threads: intra-op threads written to genai_config.json.

    Example:
        >>> build_onnx_folder(Path("smollm2-hf"), Path("int4"), precision="int4")  # doctest: +SKIP
    """
    out_dir = Path(out_dir)
    with _atomic_folder(out_dir) as staging:
        with tempfile.TemporaryDirectory(dir=staging.parent, prefix=f".{out_dir.name}.b.") as tmp:
            build = Path(tmp) / "build"
            _run_builder(Path(hf_dir), build, Path(tmp) / "cache", precision, extra_options or {})
            config = json.loads((build / GENAI_CONFIG).read_text(encoding="utf-8"))
            built = build / config["model"]["decoder"].get("filename", MODEL_FILE)
            _write_model(built, staging / MODEL_FILE)
            for path in build.iterdir():
                if path.is_file() and path.name not in (built.name, f"{built.name}.data"):
                    shutil.copyfile(path, staging / path.name)
            config["model"]["decoder"]["filename"] = MODEL_FILE
            (staging / GENAI_CONFIG).write_text(json.dumps(config, indent=4), encoding="utf-8")
        set_genai_threads(staging, threads)
    return out_dir / MODEL_FILE


def set_genai_threads(folder: Path, threads: int) -> None:
    """Set the decoder's intra-op threads (and one inter-op thread, as every
    compress measurement) in `folder`/genai_config.json; the file is left untouched
    when it already says so (an artifact's hash stays valid).

    Example:
        >>> set_genai_threads(Path("final"), 1)  # doctest: +SKIP
    """
    path = Path(folder) / GENAI_CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        options = config["model"]["decoder"].setdefault("session_options", {})
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise StageError(f"{path}: cannot read the genai config's model.decoder ({exc})") from exc
    wanted = {"intra_op_num_threads": int(threads), "inter_op_num_threads": 1}
    if all(options.get(key) == value for key, value in wanted.items()):
        return
    options.update(wanted)
    atomic_write_text(path, json.dumps(config, indent=4))


def _run_builder(
    hf_dir: Path, build: Path, cache: Path, precision: str, extra_options: dict[str, str]
) -> None:
    """The builder's `main` in this process, its chatter captured for the error message."""
    pairs = [f"{key}={value}" for key, value in extra_options.items()]
    output = io.StringIO()
    try:
        with (
            _root_logging_kept(),
            contextlib.redirect_stdout(output),
            contextlib.redirect_stderr(output),
        ):
            try:
                from onnxruntime_genai.models.builder import create_model, parse_extra_options
            except ImportError as exc:
                raise UsageError(
                    f"exporting a decoder needs onnxruntime-genai's model builder ({exc}): "
                    "pip install 'compress[llm]'"
                ) from exc
            where = (str(hf_dir), str(build), precision, "cpu", str(cache))
            create_model(None, *where, **parse_extra_options(None, *where, pairs))
    except UsageError:
        raise
    except Exception as exc:  # the builder raises Exception, ValueError, NotImplementedError...
        tail = output.getvalue().strip()[-_OUTPUT_TAIL:]
        raise StageError(
            f"onnxruntime-genai's model builder failed on {_architecture(hf_dir)} from {hf_dir} "
            f"(-p {precision} -e cpu"
            f"{' ' + ' '.join(pairs) if pairs else ''}): {type(exc).__name__}: {exc}"
            + (f"\n--- its last output ---\n{tail}" if tail else "")
        ) from exc
    if not (build / GENAI_CONFIG).is_file():
        raise StageError(f"onnxruntime-genai's model builder wrote no {GENAI_CONFIG} for {hf_dir}")


@contextlib.contextmanager
def _root_logging_kept() -> Iterator[None]:
    """Undo what importing the builder does to logging: onnxruntime's
    matmul_nbits_quantizer calls `logging.basicConfig(level=INFO)` at import, which
    would print every library's INFO lines for the rest of the process; and keep its
    per-MatMul INFO lines out of the build."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quantizer = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    quantizer_level = quantizer.level
    quantizer.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
        quantizer.setLevel(quantizer_level)


def _architecture(hf_dir: Path) -> str:
    """config.json's architectures of a Hugging Face folder, for messages."""
    try:
        config = json.loads((hf_dir / "config.json").read_text(encoding="utf-8"))
        return ", ".join(config.get("architectures") or [config.get("model_type", "?")])
    except (OSError, ValueError):
        return "a model without a readable config.json"


def _write_model(built: Path, dst: Path) -> None:
    """`built` (+ its external data) as one file `dst`; over 2 GB, `dst` + one
    `dst.data`, as the builder wrote it."""
    import onnx

    data = built.with_name(f"{built.name}.data")
    size = built.stat().st_size + (data.stat().st_size if data.exists() else 0)
    if size >= _SINGLE_FILE_BYTES:
        shutil.copyfile(built, dst)
        if data.exists():
            shutil.copyfile(data, dst.with_name(f"{dst.name}.data"))
        return
    onnx.save_model(onnx.load(str(built)), str(dst))


@contextlib.contextmanager
def _atomic_folder(path: Path) -> Iterator[Path]:
    """Yield an empty sibling folder; on success it replaces `path` (the old one,
    if any, is moved aside first and removed after), on failure it is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    staging.mkdir()
    try:
        yield staging
        old = path.parent / f".{path.name}.{secrets.token_hex(6)}.old"
        if path.exists():
            os.replace(path, old)
        os.replace(staging, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
