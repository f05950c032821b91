"""Checks of numeric arguments shared by the encoders and the indexes: an `InputTypeError` for a wrong
type (a bool or a float where a count belongs), an `InputError` naming the argument for a wrong value."""

from __future__ import annotations

import math
import numbers

from .errors import InputError, InputTypeError


def check_threshold(threshold: float) -> float:
    return check_nonnegative("threshold", threshold, " (weights are never negative)")


def check_nonnegative(name: str, value: float, why: str = "") -> float:
    """A finite real number >= 0 (not a bool), as float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputTypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise InputError(f"{name} must be a finite number >= 0{why}, got {value!r}")
    return float(value)


def check_count(name: str, value: int, minimum: int = 1) -> int:
    """A positive integer argument (not a bool, not a float), as int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputTypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)
