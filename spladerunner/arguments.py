"""Checks of numeric arguments shared by the encoders and the indexes: an `InputTypeError` for a wrong
type (a bool or a float where a count belongs), an `InputError` naming the argument for a wrong value."""

from __future__ import annotations

import math
import numbers

from .errors import InputError, InputTypeError


def check_threshold(threshold: float) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise InputTypeError(f"threshold must be a number, got {type(threshold).__name__}")
    if not math.isfinite(threshold) or threshold < 0:
        raise InputError(f"threshold must be a finite number >= 0 (weights are never negative), got {threshold!r}")
    return float(threshold)


def check_norm(norm: float) -> float:
    """A length normalisation exponent (`window_norm`): a finite number >= 0."""
    if isinstance(norm, bool) or not isinstance(norm, numbers.Real):
        raise InputTypeError(f"window_norm must be a number, got {type(norm).__name__}")
    if not math.isfinite(norm) or norm < 0:
        raise InputError(f"window_norm must be a finite number >= 0, got {norm!r}")
    return float(norm)


def check_count(name: str, value: int, minimum: int = 1) -> int:
    """A positive integer argument (not a bool, not a float), as int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputTypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)
