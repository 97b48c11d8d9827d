"""Pruning schedules: pure functions from (final ratio, steps) to the ratio after each step."""

from __future__ import annotations


def linear_schedule(final_ratio: float, steps: int) -> list[float]:
    """Equal increments: the cumulative ratio after each of `steps` steps.

    Example:
        >>> linear_schedule(0.6, 3)
        [0.2, 0.4, 0.6]
    """
    return [final_ratio * (step / steps) for step in range(1, steps + 1)]


def agp_schedule(final_ratio: float, steps: int) -> list[float]:
    """Automated gradual pruning (Zhu & Gupta, 2017): cubic, large steps first.

    r_t = r_f * (1 - (1 - t/n)^3), so most pruning happens while the network
    still has redundancy to spare and the last steps are gentle.

    Example:
        >>> [round(r, 4) for r in agp_schedule(0.5, 2)]
        [0.4375, 0.5]
    """
    return [final_ratio * (1.0 - (1.0 - step / steps) ** 3) for step in range(1, steps + 1)]


SCHEDULES = {"linear": linear_schedule, "agp": agp_schedule}


def pruning_schedule(final_ratio: float, steps: int, kind: str = "linear") -> list[float]:
    """The cumulative pruning ratio after each step, ending exactly at `final_ratio`."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    ratios = SCHEDULES[kind](final_ratio, steps)
    ratios[-1] = final_ratio  # no float drift on the ratio the user asked for
    return ratios
