"""Pruning algorithms: schedules, structured (Torch-Pruning) and unstructured (magnitude)."""

from compress.pruning.schedule import agp_schedule, linear_schedule, pruning_schedule

__all__ = ["agp_schedule", "linear_schedule", "pruning_schedule"]
