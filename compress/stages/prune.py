"""`prune`: structured (channels removed) or unstructured (weights zeroed), in steps.

After each step the model's BatchNorm statistics are re-estimated (removed
channels change what every later BatchNorm sees), the model is fine-tuned
(optionally distilling from the stage's unpruned input model; the fine-tune ends
with its own recalibration) and validated, and the step is recorded, so the
report shows the whole ratio / size / accuracy / latency path. A fine-tune
without its own optimizer continues the model's last training in the run
(`finetune_settings`). With a `target`, the stage stops at the first step that
reaches it, or keeps the last step whose validation accuracy still met the stage's
accuracy budgets.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from pathlib import Path

import torch

from compress.models import find_classifier
from compress.models.stats import count_macs, count_nonzero_params, count_params
from compress.pruning.schedule import pruning_schedule
from compress.pruning.structured import (
    IMPORTANCE_NEEDS_GRADIENTS,
    StructuredPruner,
    resolve_layer_ratios,
    resolve_modules,
)
from compress.pruning.timing import StepTimer
from compress.pruning.unstructured import (
    magnitude_prune_,
    make_permanent_,
    overall_sparsity,
    sparsity_by_layer,
)
from compress.recipe.stages import PruneStageConfig
from compress.stages.base import RunContext, Stage, StageResult
from compress.stages.finetune_settings import finetune_settings
from compress.stages.registry import register_stage
from compress.training import evaluate, fit
from compress.training.batchnorm import recalibrate_checked_
from compress.training.inference import split_logits


def example_input(signature) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """One random sample to trace the dependency graph with (a tuple for several inputs)."""
    inputs = signature.random_example(signature.sizes(1))
    return inputs[0] if len(inputs) == 1 else inputs


class TargetProbe:
    """Measures a pruned model against the stage's target, relative to the teacher."""

    def __init__(self, ctx: RunContext, target, scratch: Path):
        self.ctx, self.target, self.scratch = ctx, target, scratch
        # no teacher yet (prune is the first stage of a trial, say): the input model is it
        self.reference = ctx.teacher if ctx.teacher is not None else copy.deepcopy(ctx.model)
        self.teacher_macs = count_macs(self.reference, ctx.spec.signature)
        self.teacher_onnx = None
        if target.speedup or target.latency_p50_ms:
            from compress.runtime.onnx_export import export_onnx

            self.teacher_onnx = export_onnx(
                self.reference, ctx.spec.signature, scratch / "teacher.onnx"
            )

    def measure(self, model, step: int) -> dict:
        """The target's metric for this model, and whether the target is met."""
        macs_ratio = count_macs(model, self.ctx.spec.signature) / self.teacher_macs
        result = {"macs_ratio": macs_ratio}
        if self.teacher_onnx is not None:
            from compress.runtime.latency import measure_with_runtime, speedup
            from compress.runtime.onnx_export import export_onnx

            path = export_onnx(model, self.ctx.spec.signature, self.scratch / f"step{step}.onnx")
            teacher, pruned = measure_with_runtime(
                [self.teacher_onnx, path], self.ctx.spec.signature, self.ctx.recipe.runtime
            )
            result["latency_p50_ms"] = pruned.p50_ms
            result["speedup"] = speedup(teacher, pruned)["median"]
        target = self.target
        if target.speedup:
            result["target_met"] = result["speedup"] >= target.speedup
        elif target.macs_ratio:
            result["target_met"] = macs_ratio <= target.macs_ratio
        else:
            result["target_met"] = result["latency_p50_ms"] <= target.latency_p50_ms
        return result


def accuracy_gate(ctx: RunContext, budgets) -> tuple[float | None, str]:
    """The lowest validation accuracy the stage's accuracy budgets allow, and why.

    Inside the stage only validation data may steer decisions; the runner checks
    the same budgets on test data afterwards.
    """
    floors = []
    if budgets.accuracy_min is not None:
        floors.append((budgets.accuracy_min, f"accuracy_min {budgets.accuracy_min}"))
    if budgets.accuracy_drop_max is not None:
        reference = ctx.teacher if ctx.teacher is not None else ctx.model
        teacher_val = evaluate(reference, ctx.data.val)["accuracy"]
        floors.append(
            (
                teacher_val - budgets.accuracy_drop_max,
                f"teacher val accuracy {teacher_val:.4f} - accuracy_drop_max "
                f"{budgets.accuracy_drop_max}",
            )
        )
    if not floors:
        return None, "no accuracy budget on this stage"
    return max(floors)


def _or_ratio(value: float | None) -> str:
    return "= ratio" if value is None else str(value)


@register_stage("prune")
class PruneStage(Stage):
    """Prune the current model to `ratio` in `steps` steps, fine-tuning after each."""

    config_class = PruneStageConfig

    def _run(self, ctx: RunContext) -> StageResult:
        config = self.config
        model = ctx.model
        self.fit_warnings: list[str] = []  # every fine-tune's fallbacks, once each
        self.finetune, finetune_used = finetune_settings(ctx, config.finetune)
        self.recalibrations: list[dict] = []
        # without labels a recalibration is judged by agreement with the unpruned model
        self.reference = None
        if not ctx.data.val.labeled and config.finetune.batch_norm.recalibrate:
            self.reference = split_logits(model, ctx.data.val).argmax(1)
        unpruned = None  # the fine-tune's distillation teacher, if any
        if config.finetune.distill:
            use_teacher = config.finetune.distill_from == "teacher" and ctx.teacher is not None
            unpruned = copy.deepcopy(ctx.teacher if use_teacher else model).eval()
        ignored = resolve_modules(model, config.ignored_layers)
        classifier = find_classifier(model, ctx.spec.num_classes)
        if classifier is not None:  # its outputs are the classes: never pruned
            ignored.append(classifier)
        layer_ratios, skipped = resolve_layer_ratios(model, config.layer_ratios)
        ignored.extend(skipped)

        details = {
            "method": config.method,
            "importance": config.importance if config.method == "structured" else "l1",
            "ratio_meaning": (
                "share of output channels removed from each prunable layer; attention: "
                f"whole heads at head_ratio {_or_ratio(config.head_ratio)}, FFN width at "
                f"ffn_ratio {_or_ratio(config.ffn_ratio)}"
                if config.method == "structured"
                else "share of prunable weights set to zero"
            ),
            "skipped_layers": sorted(n for n, m in model.named_modules() if m in skipped),
            "finetune_settings": finetune_used if config.finetune.epochs else None,
        }
        if config.method == "structured":
            with tempfile.TemporaryDirectory(prefix="compress-prune-") as scratch:
                model, steps_log, outcome = self._structured(
                    ctx, model, unpruned, ignored, layer_ratios, Path(scratch)
                )
            exported = outcome.pop("exported", None)
            details.update(steps=steps_log, **outcome)
        else:
            exported = None
            details.update(self._unstructured(ctx, model, unpruned, ignored))
        details["bn_recalibration"] = self.recalibrations
        warnings = list(dict.fromkeys(self.fit_warnings))
        return StageResult(model, ctx.spec, details=details, exported=exported, warnings=warnings)

    # ------------------------------------------------------------------ structured

    def _structured(self, ctx, model, unpruned, ignored, layer_ratios, scratch: Path):
        config = self.config
        pruner = StructuredPruner(
            model,
            example_input(ctx.spec.signature),
            config.ratio,
            config.steps,
            config.schedule,
            config.importance,
            ignored,
            layer_ratios=layer_ratios,
            global_pruning=config.global_pruning,
            round_to=config.round_to,
            gradient_batches=self._gradient_batches(ctx),
            head_ratio=config.head_ratio,
            ffn_ratio=config.ffn_ratio,
        )
        probe = TargetProbe(ctx, config.target, scratch) if config.target else None
        floor, floor_reason = accuracy_gate(ctx, config.budgets) if probe else (None, "")
        timer = StepTimer(ctx.spec.signature, ctx.recipe.runtime, scratch, ctx.seed)
        # step 0 is the stage's input, which the previous stage deployed: time that file
        timer.add(model, 0, exported=ctx.input_onnx if ctx.onnx_path is None else None)
        steps_log = [self._step_record(ctx, model, 0, 0.0, None)]
        if probe is not None:
            steps_log[0].update(probe.measure(model, 0))
        # the model is pruned in place: keep a copy of the last step that was good enough
        kept, outcome = (copy.deepcopy(model) if probe else model), {}
        for step in range(1, config.steps + 1):
            ratio = pruner.step()
            self._recalibrate(ctx, model, step)
            fit_summary = self._finetune(ctx, model, unpruned, step)
            record = self._step_record(ctx, model, step, ratio, fit_summary)
            steps_log.append(record)
            timer.add(model, step)
            if probe is None:
                continue
            record.update(probe.measure(model, step))
            record["accuracy_ok"] = floor is None or record["val_accuracy"] >= floor
            if not record["accuracy_ok"]:
                outcome = {
                    "stopped": f"step {step}: val accuracy {record['val_accuracy']:.4f} is below "
                    f"{floor:.4f} ({floor_reason}); kept step {step - 1}",
                }
                break
            kept = copy.deepcopy(model)
            if record["target_met"]:
                outcome = {"stopped": f"step {step}: target {self._target_text()} reached"}
                break
        outcome["flags"] = timer.annotate(steps_log)
        outcome["attention_families"] = pruner.families
        if probe is None:  # the model ships as its last step was timed: deploy that file
            outcome["exported"] = ctx.workdir / "model.onnx"
            shutil.copyfile(timer.paths[max(timer.paths)], outcome["exported"])
        if probe is not None:
            outcome.setdefault(
                "stopped",
                f"target {self._target_text()} not reached within ratio {config.ratio}",
            )
            outcome["target"] = config.target.model_dump(exclude_none=True)
            outcome["target_met"] = any(
                r.get("target_met") and r.get("accuracy_ok", True) for r in steps_log[1:]
            )
            outcome["kept_step"] = max(
                (r["step"] for r in steps_log if r.get("accuracy_ok", True)), default=0
            )
            return kept.eval(), steps_log, outcome
        return model, steps_log, outcome

    def _target_text(self) -> str:
        return ", ".join(
            f"{k} = {v}" for k, v in self.config.target.model_dump(exclude_none=True).items()
        )

    def _gradient_batches(self, ctx: RunContext):
        if self.config.importance not in IMPORTANCE_NEEDS_GRADIENTS:
            return None
        generator = torch.Generator().manual_seed(ctx.seed)
        order = torch.randperm(len(ctx.data.train), generator=generator)[:256]
        train = ctx.data.train
        batches = []
        for i in range(0, len(order), 64):
            inputs = train.take(order[i : i + 64])  # a tuple for several inputs
            batches.append((inputs[0] if len(inputs) == 1 else inputs, train.y[order[i : i + 64]]))
        return batches

    # ------------------------------------------------------------------ unstructured

    def _unstructured(self, ctx, model, unpruned, ignored) -> dict:
        config = self.config
        steps_log = [self._step_record(ctx, model, 0, 0.0, None)]
        previous = 0.0
        schedule = pruning_schedule(config.ratio, config.steps, config.schedule)
        for step, ratio in enumerate(schedule, 1):
            magnitude_prune_(model, ratio, previous, ignored, config.global_pruning)
            previous = ratio
            self._recalibrate(ctx, model, step)
            fit_summary = self._finetune(ctx, model, unpruned, step)
            record = self._step_record(ctx, model, step, ratio, fit_summary)
            record["sparsity"] = overall_sparsity(model, ignored)
            steps_log.append(record)
        make_permanent_(model)
        return {
            "steps": steps_log,
            "sparsity": overall_sparsity(model, ignored),
            "sparsity_by_layer": sparsity_by_layer(model),
            "nonzero_params": count_nonzero_params(model),
            "note": (
                "zeroed weights are stored densely and run on dense kernels: expect no "
                "speed-up and no raw-size gain on ONNX Runtime; the gain is in the "
                "compressed size (size_compressed_bytes)"
            ),
        }

    # ------------------------------------------------------------------ shared

    def _recalibrate(self, ctx: RunContext, model, step: int) -> None:
        """BatchNorm statistics after the step removed channels (or zeroed weights),
        before the fine-tune. In this process only, also in a distributed run: no
        training job is running, and the draw is bounded."""
        record = recalibrate_checked_(
            model, ctx.data, self.finetune.batch_norm, where=f"step {step}: after pruning",
            batch_size=self.finetune.batch_size, seed=ctx.seed + step, reference=self.reference,
        )  # fmt: skip
        if record is not None:
            self.recalibrations.append(record)

    def _finetune(self, ctx: RunContext, model, unpruned, step: int) -> dict | None:
        finetune = self.finetune
        if finetune.epochs == 0:
            return None
        result = fit(
            model,
            ctx.data,
            finetune,
            seed=ctx.seed + step,
            augment=ctx.recipe.data.augment,
            teacher=unpruned,
            distill=finetune if unpruned is not None else None,
            on_epoch_end=ctx.on_epoch_end,
            strategy=ctx.strategy,
            checkpoint=ctx.epoch_checkpoint(),
        )
        self.fit_warnings += result.warnings
        if result.batch_norm is not None:
            where = f"step {step}: after fine-tune"
            self.recalibrations.append({**result.batch_norm, "where": where})
        summary = result.summary()
        summary.pop("history")
        return summary

    @staticmethod
    def _step_record(ctx: RunContext, model, step: int, ratio: float, fit_summary) -> dict:
        return {
            "step": step,
            "ratio": ratio,
            "params": count_params(model),
            "macs": count_macs(model, ctx.spec.signature),
            "val_accuracy": evaluate(model, ctx.data.val)["accuracy"],
            "finetune": fit_summary,
        }
