"""The hf-causal-lm family's model: a transformers causal LM behind one forward
(its family object and config: `families/hf_causal_lm.py`).

Building and weights are two steps, as for hf-encoder:

1. `resolve_config` reads the folder's `config.json` (a GGUF file is first written once
   as a plain fp32 folder into the cache: `gguf_cache_folder`), keeps the chosen
   `layers` and records the result in the config's `decoder` field, which goes into
   model.json: a saved (or pruned) model rebuilds from its run folder alone.
2. `CausalLM(config)` builds the architecture from `decoder` (random weights);
   `load_pretrained_` copies the folder's weights into it, the kept layers renumbered.

`CausalLM.forward(input_ids, attention_mask)` returns the logits of every position
(batch, sequence, vocab), without a cache: what training, parity and the generic
MAC counter call. The exporter (`compress.runtime.lm_export`) takes `model.lm`, the
transformers model itself, and adds the KV cache. transformers is imported inside the
functions that use it (`import compress` stays lean).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.errors import DataError, RecipeError
from compress.models.hf_local import offline, renumber_layers

# config.json keys that describe a checkpoint's history, not the architecture
_DROPPED_KEYS = ("_name_or_path", "transformers_version", "quantization_config", "torch_dtype",
                 "dtype")  # fmt: skip
# files of a model folder that make up its tokenizer (shipped beside the model)
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
    "merges.txt", "tokenizer.model", "added_tokens.json", "generation_config.json",
    "chat_template.jinja",
)  # fmt: skip


LAYERS = "model.layers."  # decoder layer keys: model.layers.<i>.…


def cache_root() -> Path:
    """Where derived files (a GGUF file's fp32 folder) are kept between runs."""
    root = os.environ.get("COMPRESS_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "compress"


def gguf_path(config: Any) -> Path:
    """The GGUF file a config names (`gguf`, inside `package` when set)."""
    if config.package:
        from compress.models.gguf_folder import package_file

        try:
            return package_file(config.package, config.gguf)
        except DataError as exc:
            raise RecipeError(f"model.gguf: {exc}") from None
    path = Path(config.gguf).expanduser()
    if not path.is_file():
        raise RecipeError(f"model.gguf {config.gguf!r}: no such file")
    return path


def gguf_cache_folder(path: Path) -> Path:
    """The plain fp32 Hugging Face folder of GGUF file `path`, written once into the
    cache under the file's content hash (a changed file gets a new folder)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    folder = cache_root() / "gguf" / f"{path.stem}-{digest.hexdigest()[:16]}"
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return folder
    import shutil

    from compress.models.gguf_folder import gguf_to_folder

    offline()
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    before = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"  # transformers' GGUF reader draws its own tqdm bar
    try:
        gguf_to_folder(path, tmp)
    finally:
        if before is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = before
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)  # whole or absent: a killed conversion is never taken for one
    return folder


def model_folder(config: Any) -> Path:
    """The Hugging Face folder a config names: `path`, or the GGUF file's cache folder."""
    if config.gguf:
        return gguf_cache_folder(gguf_path(config))
    if not config.path:
        raise RecipeError("model.architecture 'hf-causal-lm' needs model.path or model.gguf")
    folder = Path(config.path).expanduser()
    if not (folder / "config.json").is_file():
        raise RecipeError(
            f"model.path {config.path!r}: {folder} has no config.json (not a Hugging Face "
            "model folder)"
        )
    return folder


def tokenizer_files(folder: Path) -> list[Path]:
    """The tokenizer files (and generation config) of a model folder."""
    return [folder / name for name in TOKENIZER_FILES if (folder / name).is_file()]


def resolve_config(config: Any, base: dict[str, Any] | None = None) -> Any:
    """`config` with `decoder` filled in: the folder's config.json (or `base`, another
    model's decoder dict) with `num_hidden_layers` set to the kept layers.

    A config whose `decoder` is already set (a rebuilt model) is returned as it is.
    """
    if config.decoder is not None:
        return config
    if base is None or config.path or config.gguf:
        path = model_folder(config) / "config.json"
        try:
            base = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RecipeError(f"{path}: unreadable ({exc})") from None
    decoder = {k: v for k, v in base.items() if k not in _DROPPED_KEYS}
    total = int(decoder.get("num_hidden_layers", 0))
    layers = config.layers if config.layers is not None else list(range(total))
    bad = [i for i in layers if not 0 <= i < total]
    if bad:
        raise RecipeError(f"model.layers {config.layers}: {bad} out of range 0..{total - 1}")
    decoder["num_hidden_layers"] = len(layers)
    if "layer_types" in decoder:  # per-layer attention kinds follow the kept layers
        decoder["layer_types"] = [decoder["layer_types"][i] for i in layers]
    return config.model_copy(update={"decoder": decoder})


def hf_config(decoder: dict[str, Any]):
    """The transformers config of a `decoder` dict (eager attention: exports plainly)."""
    offline()
    from transformers import AutoConfig

    settings = {k: v for k, v in decoder.items() if k != "model_type"}
    config = AutoConfig.for_model(decoder["model_type"], **settings)
    config._attn_implementation = "eager"
    return config


class CausalLM(nn.Module):
    """A transformers causal LM (`lm`) whose forward takes the signature's two inputs and
    returns the logits of every position; nothing else (no cache, no loss)."""

    def __init__(self, config: Any):
        super().__init__()
        from transformers import AutoModelForCausalLM

        if config.decoder is None:
            raise RecipeError("model.decoder is unset: resolve the config before building")
        self.lm = AutoModelForCausalLM.from_config(hf_config(config.decoder))

    @classmethod
    def around(cls, lm: nn.Module) -> CausalLM:
        """A `CausalLM` whose `lm` is the given transformers model (a student, a copy)."""
        model = cls.__new__(cls)
        nn.Module.__init__(model)
        model.lm = lm
        return model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return out.logits


def check_inputs(model: CausalLM, signature: Any) -> None:
    """Token ids the data can hold must index the model's embedding table."""
    if signature is None:
        return
    vocab = model.lm.get_input_embeddings().num_embeddings
    for spec in signature.inputs:
        if spec.name == "input_ids" and spec.high is not None and spec.high > vocab:
            raise RecipeError(
                f"the tokenizer has {spec.high} token ids and the model's embedding table "
                f"{vocab}: use the model folder's own tokenizer"
            )


def load_pretrained_(model: CausalLM, config: Any) -> CausalLM:
    """Copy the folder's weights into `model` (the kept `layers`, renumbered in order)."""
    from safetensors.torch import load_file

    folder = model_folder(config)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise RecipeError(f"{folder}: no *.safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(str(file)))
    total = json.loads((folder / "config.json").read_text(encoding="utf-8"))["num_hidden_layers"]
    layers = config.layers if config.layers is not None else list(range(total))
    state = renumber_layers(state, layers, prefix=LAYERS)
    if "lm_head.weight" not in state and model.lm.config.tie_word_embeddings:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    missing, unexpected = model.lm.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("rotary_emb.inv_freq")]
    if missing or unexpected:
        raise RecipeError(f"{folder}: weights do not fit the model (missing {missing[:4]}, "
                          f"unexpected {unexpected[:4]})")  # fmt: skip
    if model.lm.config.tie_word_embeddings:
        model.lm.tie_weights()
    return model


def init_from_teacher_(student: CausalLM, teacher: CausalLM, layers: list[int]) -> None:
    """A student of the teacher's embeddings, chosen layers (in order), norm and head."""
    state = renumber_layers(teacher.lm.state_dict(), layers, prefix=LAYERS)
    student.lm.load_state_dict(state, strict=True)
    if student.lm.config.tie_word_embeddings:
        student.lm.tie_weights()


def save_hf_folder(model: CausalLM, tokenizer_dir: Path, folder: Path) -> Path:
    """`model` as a Hugging Face folder (config.json, safetensors, tokenizer files):
    what onnxruntime-genai's builder and `from_pretrained` read."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    model.lm.save_pretrained(folder)
    for file in tokenizer_files(tokenizer_dir):
        if not (folder / file.name).exists():
            shutil.copyfile(file, folder / file.name)
    return folder


def tokenizer_folder(model_config: Any) -> Path:
    """The folder whose tokenizer a language-model run uses: the recipe model's files."""
    from compress.models.family import family_of

    folder = family_of(model_config).files(model_config)
    if folder is None:
        raise RecipeError("a causal-lm model needs its files for the tokenizer (model.path/gguf)")
    return folder


def deployed_files(onnx_path: Path) -> list[Path]:
    """What a deployed language-model folder ships: model.onnx (and external data),
    genai_config.json and the tokenizer files beside it."""
    folder = onnx_path.parent
    names = [onnx_path.name, onnx_path.name + ".data", "genai_config.json"]
    return [folder / n for n in names if (folder / n).is_file()] + tokenizer_files(folder)
