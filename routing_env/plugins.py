"""Code of one's own named by a string, ``module.path:name``: a custom agent (``--agent``) or reward
(``reward=``). A string, unlike an object, goes into run folders, sweeps and studies."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
from typing import Any


def option_value(raw: str) -> Any:
    """An option's value as written in a string (``--env-kwargs KEY=VALUE``, a reward spec's
    ``[key=value]``): JSON where it parses as JSON (a number, ``true``, ``null``, a list), else the string
    itself, so that ``reward=accuracy`` needs no quotes and ``lam=0.1`` is a float wherever it is written."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def import_named(spec: str, kind: str, form: str) -> Any:
    """The attribute ``module.path:name`` names, imported; a ``ValueError`` naming the ``kind`` (``agent``,
    ``reward``) and the expected ``form`` where the spec is malformed, the module is not importable or
    the name is not in it."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name or ":" in name:
        raise ValueError(f"malformed custom {kind} {spec!r}; expected {form!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"custom {kind} {spec!r}: cannot import module {module_name!r} ({e}); is its folder on PYTHONPATH?") from None
    if not hasattr(module, name):
        raise ValueError(f"custom {kind} {spec!r}: module {module_name!r} has no attribute {name!r}")
    return getattr(module, name)


def source_sha256(spec: str) -> str:
    """The sha256 of the source file of the module ``module.path:name`` names: what a sweep compares
    before it reuses a finished run, since the name alone stays the same when the code changes."""
    module = importlib.import_module(spec.partition(":")[0])
    try:
        path = inspect.getsourcefile(module)
    except TypeError:  # a built-in module has no source file
        path = None
    if path is None:
        raise ValueError(f"custom {spec!r}: module {module.__name__!r} has no source file to fingerprint")
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()
