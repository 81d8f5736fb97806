"""Checks of option values, with one wording: a bad value is refused by name, with what was expected.

Options reach the library as Python values, as JSON from ``--env-kwargs`` / ``--agent-kwargs`` and
as strings from a reward spec's ``[key=value]``, so a value can be a string where a number is
expected (``true`` or ``nan`` typed by hand) or a bool where an integer is (``True == 1``). Each check
takes any real number numpy or Python makes (``np.float32(0.1)`` is a number), refuses a bool
where a number is expected, and returns the value as a plain Python ``int``, ``float`` or ``bool``
(what JSON writes: run folders keep every option in ``config.json``).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np


def check_number(name: str, value: Any, *, low: float | None = None, above: float | None = None,
                 high: float | None = None, integer: bool = False, infinite: bool = False, hint: str = "") -> Any:
    """``value`` as a Python ``int`` or ``float`` if it is a finite number (an integer with ``integer``;
    ``+inf`` too with ``infinite``, where it means "no limit") with ``value >= low``, ``value > above``
    and ``value <= high`` where given; else a ``ValueError`` such as ``max_grad_norm must be a finite
    number > 0, got -1``. ``hint`` follows the expectation in the message (what the option means, or
    an alternative such as ``or None``)."""
    kind = numbers.Integral if integer else numbers.Real
    valid = isinstance(value, kind) and not isinstance(value, (bool, np.bool_)) and (
        math.isfinite(value) or (infinite and value == math.inf))
    if valid:
        valid = (low is None or value >= low) and (above is None or value > above) and (high is None or value <= high)
    if not valid:
        kind_words = "a number" if infinite else None
        raise ValueError(f"{name} must be {expectation(low, above, high, integer, kind_words)}{hint}, got {value!r}")
    return int(value) if integer else float(value) if isinstance(value, np.generic) else value


def check_field(instance: Any, name: str, *, label: str = "", optional: bool = False, **bounds: Any) -> None:
    """Check the field ``name`` of the dataclass ``instance`` with :func:`check_number` (``bounds`` its
    keywords; ``None`` passes where ``optional``; the message names ``label`` + ``name``) and store back
    the plain Python number it returns, in a frozen dataclass too: options and specs are written as JSON
    (``config.json``, ``agent.json``, checkpoints), and numpy's scalars are not JSON."""
    value = getattr(instance, name)
    if value is None and optional:
        return
    object.__setattr__(instance, name, check_number(f"{label}{name}", value, **bounds))


def expectation(low: float | None, above: float | None, high: float | None, integer: bool, kind: str | None = None) -> str:
    """What :func:`check_number` expects, in words: ``an integer >= 1``, ``a finite number in [0, 1]``."""
    kind = kind or ("an integer" if integer else "a finite number")
    if low is not None and high is not None:
        return f"{kind} in [{low:g}, {high:g}]"
    if above is not None and high is not None:
        return f"{kind} in ({above:g}, {high:g}]"
    bounds = [f">= {low:g}"] if low is not None else []
    bounds += [f"> {above:g}"] if above is not None else []
    bounds += [f"<= {high:g}"] if high is not None else []
    return " ".join([kind, *bounds])


def check_flag(name: str, value: Any) -> bool:
    """``value`` as a Python ``bool`` if it is ``True`` or ``False`` (numpy's too); else a
    ``ValueError``. A string such as ``"False"`` (``--env-kwargs train_backbone=False``: JSON spells it
    ``false``) is truthy and would turn the option on."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return bool(value)
