"""Typed schemas of config groups: one dataclass per group, checked before anything is written.

A schema is a dataclass whose fields are declared with :func:`spec`::

    @dataclass(kw_only=True)
    class NPGOverrides:
        env: str = spec(help="task name (fastmbrl.envs)")
        num_iter: int = spec(50, ge=1)
        gamma: float = spec(0.995, gt=0.0, le=1.0)
        reward_file: str | None = spec(None, nullable=True)

:func:`check` walks a config node against it and raises :class:`ConfigError` for the first
problem, naming the key, the value and what is allowed: a wrong type (``num_steps=abc``,
``num_steps=100.5``, ``progress=maybe``), a bound (``sac_gamma=1.5``), a choice
(``activation=gelu``; ``true`` never matches ``1``), a missing or unresolvable key
(``${overrides.gone}``) or an unknown key (with the closest known key as a hint), e.g.::

    overrides.num_steps='abc': expected an integer >= 1
    dynamics_model.model.activation='gelu': allowed values are 'silu', 'relu', 'tanh'
    unknown key algorithm.num_eval_episode=3 (did you mean algorithm.num_eval_episodes?)

``kw_only=True`` lets required keys (``spec()`` without a default) follow keys with defaults.
A field typed as another schema dataclass is a nested group (checked recursively); ``list[int]``
with ``length=`` a fixed-length list whose items get the field's bounds; ``Any`` with
``choices=`` a key whose allowed values have different types (``progress: auto|true|false``).
``fastmbrl train`` prints the message and exits with status 2 before anything is written.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

__all__ = ["ConfigError", "spec", "check", "defaults"]


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key."""


def spec(default: Any = dataclasses.MISSING, *, ge: float | None = None,
         gt: float | None = None, le: float | None = None, lt: float | None = None,
         choices: tuple | None = None, nullable: bool = False, length: int | None = None,
         help: str = "") -> Any:
    """A schema field: its default (none: the key is required), bounds, choices, whether null
    is allowed, the length of a list, and a one-line help text used in error messages."""
    meta = dict(ge=ge, gt=gt, le=le, lt=lt, choices=choices, nullable=nullable,
                length=length, help=help)
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda d=default: list(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _show(value: Any) -> str:
    """A value as a user writes it on the command line (true, null, 3, abc)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (ListConfig, DictConfig)):
        return str(OmegaConf.to_container(value, resolve=False))
    return repr(value) if isinstance(value, str) else str(value)


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same kind: true is not 1, 1 is not "1"."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    return a == b


def _bounds_text(meta: dict) -> str:
    if meta.get("choices") is not None:
        return "one of " + ", ".join(_show(c) for c in meta["choices"])
    parts = [f"{word} {meta[name]}" for name, word in
             (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if meta.get(name) is not None]
    return " and ".join(parts)


def _expected(tp: Any, meta: dict) -> str:
    """What a key allows, e.g. ``an integer >= 1`` or ``one of silu, relu, tanh``."""
    bounds = _bounds_text(meta)
    if meta.get("choices") is not None:
        text = bounds
    else:
        text = _type_name(tp) + (f" {bounds}" if bounds else "")
    if meta.get("nullable"):
        text += " (or null)"
    return text


def _split_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _check_scalar(value: Any, tp: Any, key: str, meta: dict | None = None) -> None:
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
    }.get(tp)
    if ok is None:
        raise TypeError(f"schema type {tp!r} of {key} is not supported")
    if not ok(value):
        raise ConfigError(f"{key}={_show(value)}: expected {_expected(tp, meta or {})}")


def _check_bounds(value: Any, meta: dict, key: str) -> None:
    if meta.get("choices") is not None:
        if not any(_same(value, c) for c in meta["choices"]):
            allowed = ", ".join(_show(c) for c in meta["choices"])
            raise ConfigError(f"{key}={_show(value)}: allowed values are {allowed}")
        return
    for name, test in (("ge", lambda v, b: v >= b), ("gt", lambda v, b: v > b),
                       ("le", lambda v, b: v <= b), ("lt", lambda v, b: v < b)):
        bound = meta.get(name)
        if bound is not None and isinstance(value, (int, float)) and not test(value, bound):
            raise ConfigError(f"{key}={_show(value)}: must be {_bounds_text(meta)}")


def _check_value(value: Any, tp: Any, meta: dict, key: str) -> None:
    tp, optional = _split_optional(tp)
    if value is None:
        if optional or meta.get("nullable"):
            return
        raise ConfigError(f"{key}=null: expected {_expected(tp, meta)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, (DictConfig, dict)):
            raise ConfigError(f"{key}={_show(value)}: expected a group of keys "
                              f"({', '.join(f.name for f in dataclasses.fields(tp))})")
        check(value, tp, key)
        return
    if typing.get_origin(tp) is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        n = meta.get("length")
        plural = {int: "integers", float: "numbers", bool: "booleans", str: "strings"}.get(
            item_tp, "values")
        what = f"a list of {n} {plural}" if n is not None else f"a list of {plural}"
        if _bounds_text(meta):
            what += f" {_bounds_text(meta)}"
        if not isinstance(value, (ListConfig, list, tuple)):
            raise ConfigError(f"{key}={_show(value)}: expected {what}")
        if n is not None and len(value) != n:
            raise ConfigError(f"{key}={_show(value)}: expected {what}")
        for i, item in enumerate(value):
            if item_tp is not Any:
                _check_scalar(item, item_tp, f"{key}[{i}]", meta)
            _check_bounds(item, meta, f"{key}[{i}]")
        return
    if tp is Any:
        _check_bounds(value, meta, key)
        return
    _check_scalar(value, tp, key, meta)
    _check_bounds(value, meta, key)


def check(node: DictConfig | dict, schema: type, path: str, *,
          allow_unknown: tuple[str, ...] = ()) -> None:
    """Check every key of ``node`` (the config group at ``path``) against the dataclass
    ``schema``; keys in ``allow_unknown`` are skipped (checked elsewhere)."""
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    keys = list(node.keys())
    for k in keys:
        if k not in fields and k not in allow_unknown:
            key = f"{path}.{k}" if path else str(k)
            close = difflib.get_close_matches(str(k), list(fields), n=1)
            hint = (f"did you mean {path + '.' if path else ''}{close[0]}?" if close else
                    f"known keys: {', '.join(fields)}")
            raise ConfigError(f"unknown key {key}={_show(_get(node, k, key))} ({hint})")
    for name, f in fields.items():
        key = f"{path}.{name}" if path else name
        if name not in node:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{key} is missing: expected "
                                  f"{_expected(hints[name], f.metadata)}")
            continue
        if isinstance(node, DictConfig) and OmegaConf.is_missing(node, name):
            raise ConfigError(f"{key}=??? (missing): expected "
                              f"{_expected(hints[name], f.metadata)}")
        _check_value(_get(node, name, key), hints[name], dict(f.metadata), key)


def _get(node: DictConfig | dict, name: str, key: str) -> Any:
    """``node[name]``, with a failed interpolation (``${overrides.gone}``) as a ConfigError."""
    try:
        return node[name]
    except OmegaConfBaseException as exc:
        raw = OmegaConf.to_container(node, resolve=False).get(name)
        first = str(exc).splitlines()[0]
        raise ConfigError(f"{key}={_show(raw)}: cannot be resolved ({first})") from None


def defaults(schema: type) -> dict:
    """The schema's defaults as a plain dict (required keys left out)."""
    out = {}
    for f in dataclasses.fields(schema):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out
