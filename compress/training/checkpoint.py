"""Epoch checkpoints: a training stage killed mid-way resumes from its last epoch.

After every epoch `fit` writes what the next epoch depends on: the weights, the
optimizer and LR-schedule state, both random generators, the early-stopping state,
the history and the best epoch's weights. Resuming from it gives the same result
as never stopping (tested: identical metrics on CPU).

No pickle: tensors go to safetensors, everything else to JSON. `state.json` is
written last and records the hash of `state.safetensors`, so a kill between the two
writes leaves a pair that does not match, which is ignored.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from compress.artifacts import atomic_path, atomic_write_json, sha256_file

FORMAT = "compress-epoch-checkpoint/1"


def fingerprint(model: nn.Module, *parts: Any) -> str:
    """Identity of a fit call: the starting weights and everything configuring it."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    digest.update(json.dumps(parts, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _split_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = tensor
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


class EpochCheckpoint:
    """The resumable state of one `fit` call, kept in `folder`."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.usable = True  # set False when some state cannot be stored without pickle
        self.off_reason: str | None = None  # why `usable` went False (the fit reports it)

    def save(self, epoch: int, fingerprint: str, *, model, optimizer, schedule, generator,
             stopper, result, best_state) -> None:  # fmt: skip
        if not self.usable:
            return
        optimizer_tensors, optimizer_meta = _split_optimizer(optimizer.state_dict())
        meta = {
            "format": FORMAT,
            "fingerprint": fingerprint,
            "epoch": epoch,
            "optimizer": optimizer_meta,
            "scheduler": schedule.scheduler.state_dict() if schedule.scheduler else None,
            "stopper": {
                "best": stopper.best,
                "best_loss": stopper.best_loss,
                "bad_epochs": stopper.bad_epochs,
            },
            "result": {
                "history": result.history,
                "best_epoch": result.best_epoch,
                "best": result.best,
                "stop_reason": result.stop_reason,
            },
        }
        try:
            text = json.dumps(meta)
        except TypeError as exc:  # a scheduler holding a callable, say: train on, not resumable
            self.usable = False
            self.off_reason = f"its state cannot be stored as JSON: {exc}"
            return
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        tensors |= {f"best.{k}": v for k, v in best_state.items()}
        tensors |= optimizer_tensors
        tensors["rng.generator"] = generator.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        self.folder.mkdir(parents=True, exist_ok=True)
        weights = self.folder / "state.safetensors"
        with atomic_path(weights) as tmp:
            save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, str(tmp))
        meta = json.loads(text)
        meta["tensors_sha256"] = sha256_file(weights)
        atomic_write_json(self.folder / "state.json", meta)

    def load(self, fingerprint: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
        """The saved (meta, tensors) if they are whole and belong to this fit call."""
        meta_path, weights = self.folder / "state.json", self.folder / "state.safetensors"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("format") != FORMAT or meta.get("fingerprint") != fingerprint:
                return None
            if sha256_file(weights) != meta.get("tensors_sha256"):
                return None
            return meta, load_file(str(weights))
        except (OSError, ValueError, SafetensorError):
            return None

    def restore(self, loaded, *, model, optimizer, schedule, generator, stopper, result):
        """Put the saved state back; returns (first epoch to run, best epoch's weights)."""
        meta, tensors = loaded

        def prefixed(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

        model.load_state_dict(prefixed("model."))
        optimizer.load_state_dict(_join_optimizer(tensors, meta["optimizer"]))
        if schedule.scheduler is not None and meta["scheduler"] is not None:
            schedule.scheduler.load_state_dict(meta["scheduler"])
        generator.set_state(tensors["rng.generator"])
        torch.set_rng_state(tensors["rng.torch"])
        stopper.best = meta["stopper"]["best"]
        stopper.best_loss = meta["stopper"]["best_loss"]
        if stopper.best_loss is None:
            stopper.best_loss = math.inf
        stopper.bad_epochs = meta["stopper"]["bad_epochs"]
        saved = meta["result"]
        result.history = saved["history"]
        result.best_epoch, result.best = saved["best_epoch"], saved["best"]
        result.stop_reason = saved["stop_reason"]
        result.resumed_from_epoch = meta["epoch"]
        return meta["epoch"] + 1, prefixed("best.")
