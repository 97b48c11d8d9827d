"""What a decoder's ONNX graph takes and gives: token inputs, its KV cache, its logits.

Read from the session and the folder's genai_config.json, never assumed: the number
of layers, KV heads and head size differ between models (SmolLM2: 30 layers, 3 KV
heads of 64), and onnxruntime-genai's builder declares the head size as a symbolic
axis (`kv_cache_dim`), so the config is where it is written down.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compress.errors import StageError

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
POSITION_IDS = "position_ids"
LOGITS = "logits"
TOKEN_INPUTS = (INPUT_IDS, ATTENTION_MASK, POSITION_IDS)
_KV_NAME = re.compile(r"\.(\d+)\.(key|value)$")


@dataclass(frozen=True)
class DecoderIO:
    """A decoder graph's names and KV layout.

    Attributes:
        inputs: every input name of the graph, in its order.
        past: past KV input names in layer order, key before value (the graph
            itself lists all keys first).
        present: the output that carries each `past` entry's next value, same order.
        kv_heads: KV heads per layer (the cache's axis 1).
        head_dim: size of one head (the cache's axis 3).
        dtype: the cache's element type (float32, or float16 for an fp16 graph).
    """

    inputs: tuple[str, ...]
    past: tuple[str, ...]
    present: tuple[str, ...]
    kv_heads: int
    head_dim: int
    dtype: type = np.float32

    @classmethod
    def from_session(cls, session, onnx_path: str | Path) -> DecoderIO:
        """Names from `session`, KV sizes from its static axes or, where the builder
        left one symbolic, from genai_config.json beside `onnx_path`.

        Example:
            >>> io = DecoderIO.from_session(make_session(path), path)  # doctest: +SKIP
            >>> io.empty_past(2)["past_key_values.0.key"].shape       # doctest: +SKIP
            (2, 2, 0, 16)
        """
        inputs = tuple(value.name for value in session.get_inputs())
        outputs = {value.name for value in session.get_outputs()}
        missing = [name for name in (INPUT_IDS, ATTENTION_MASK) if name not in inputs]
        if missing or LOGITS not in outputs:
            raise StageError(
                f"{onnx_path}: not a decoder with a KV cache: it needs inputs "
                f"{INPUT_IDS}, {ATTENTION_MASK} and output {LOGITS}; it has inputs "
                f"{list(inputs)} and outputs {sorted(outputs)}"
            )
        kv = {value.name: value for value in session.get_inputs() if value.name not in TOKEN_INPUTS}
        past = tuple(sorted(kv, key=lambda name: _layer_slot(name, onnx_path)))
        present = tuple(_present_name(name, outputs, onnx_path) for name in past)
        if not past:  # a graph without a cache: every call starts from nothing
            return cls(inputs, past, present, 0, 0)
        shape = kv[past[0]].shape
        decoder = _genai_decoder(Path(onnx_path).parent)
        kv_heads = _axis(shape[1], decoder.get("num_key_value_heads"), "KV heads", onnx_path)
        head_dim = _axis(shape[3], decoder.get("head_size"), "head size", onnx_path)
        dtype = np.float16 if kv[past[0]].type == "tensor(float16)" else np.float32
        return cls(inputs, past, present, kv_heads, head_dim, dtype)

    def empty_past(self, batch: int) -> dict[str, np.ndarray]:
        """Past tensors of length 0: the feed of a prompt without history."""
        shape = (batch, self.kv_heads, 0, self.head_dim)
        return {name: np.zeros(shape, dtype=self.dtype) for name in self.past}

    def feed(
        self, input_ids: np.ndarray, past: dict[str, np.ndarray] | None = None
    ) -> dict[str, np.ndarray]:
        """The feed for `input_ids` [batch, seq] after `past` (None: empty), attention
        mask all ones over past + seq, position ids counted on from the past length."""
        input_ids = np.asarray(input_ids, dtype=np.int64)
        batch, length = input_ids.shape
        past = self.empty_past(batch) if past is None else past
        past_length = next(iter(past.values())).shape[2] if past else 0
        feed = {INPUT_IDS: input_ids, **past}
        feed[ATTENTION_MASK] = np.ones((batch, past_length + length), dtype=np.int64)
        if POSITION_IDS in self.inputs:
            positions = np.arange(past_length, past_length + length, dtype=np.int64)
            feed[POSITION_IDS] = np.broadcast_to(positions, (batch, length)).copy()
        return feed


def _layer_slot(name: str, onnx_path) -> tuple[int, int]:
    """(layer, 0 for key / 1 for value) of a KV input such as `past_key_values.3.value`."""
    found = _KV_NAME.search(name)
    if not found:
        raise StageError(
            f"{onnx_path}: input {name!r} is neither a token input {TOKEN_INPUTS} nor a "
            "KV cache input named like past_key_values.<layer>.key / .value"
        )
    return int(found.group(1)), 0 if found.group(2) == "key" else 1


def _present_name(past: str, outputs: set[str], onnx_path) -> str:
    """The output that holds `past`'s next value: `present.N.key` for
    `past_key_values.N.key` (onnxruntime-genai's builder, optimum)."""
    for candidate in (past.replace("past_key_values", "present"), past.replace("past", "present")):
        if candidate in outputs:
            return candidate
    raise StageError(f"{onnx_path}: no present output for past input {past!r} in {sorted(outputs)}")


def _genai_decoder(folder: Path) -> dict:
    """genai_config.json's model.decoder table of `folder`; empty when there is none."""
    path = folder / "genai_config.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))["model"]["decoder"]
    except (ValueError, KeyError) as exc:
        raise StageError(f"{path}: unreadable genai config ({exc})") from exc


def _axis(declared, configured, what: str, onnx_path) -> int:
    """A KV axis size: the graph's static value, else the genai config's."""
    if isinstance(declared, int):
        return declared
    if isinstance(configured, int):
        return configured
    raise StageError(
        f"{onnx_path}: the KV cache's {what} is symbolic in the graph and genai_config.json "
        "beside it does not state it"
    )
