"""Typed configs: dataclass defaults, YAML presets from ``configs/``, ``key=value`` overrides.

Every key is checked before any work starts: unknown keys name the valid ones (and the
closest), values are coerced to the declared type or rejected, ``Literal`` fields list
their choices, and each config's ``validate()`` checks ranges. Nested dataclass and dict
fields take dotted keys (``env_options.pixels=true``).

The machinery only: it imports no module of the library (the keys every agent shares are
``rl.loop.Common``; the reward section is ``rl.rewards.ShaperConfig``).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A config key, type or value that cannot be used; raised before any work starts."""


def _is_dataclass_type(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: cannot be {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}={value!r} is not valid; choices: {', '.join(map(repr, args))}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{key}={value!r}: expected a bool (true / false)")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: expected an integer")
        if isinstance(value, int):
            return value
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={value!r}: expected an integer") from None
        if not f.is_integer():
            raise ConfigError(f"{key}={value!r}: expected an integer")
        return int(f)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: expected a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={value!r}: expected a number") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}={value!r}: expected a string")
        return str(value)
    if origin in (tuple, list) or tp in (tuple, list):
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r}: expected a list like [256, 256]")
        item = args[0] if args else Any
        items = [v if item is Any else _coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}={value!r}: expected a mapping")
        return dict(value)
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} keys")
        return apply(tp(), value, prefix=f"{key}.")
    return value


def _merge(current: dict, value: dict) -> dict:
    """``value`` over ``current``, nested dicts merged key by key: an override of
    ``shaper.streams.preference.capacity`` keeps the preset's other preference options."""
    out = dict(current)
    for k, v in value.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def apply(cfg, updates: dict, prefix: str = ""):
    """Return a copy of ``cfg`` with nested ``updates`` applied, type-checked key by key."""
    hints = typing.get_type_hints(type(cfg))
    names = [f.name for f in dataclasses.fields(cfg)]
    changes = {}
    for key, value in updates.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=3)
            raise ConfigError(
                f"unknown config key '{prefix}{key}'"
                + (f" (did you mean {', '.join(prefix + c for c in close)}?)" if close else "")
                + f"; valid keys: {', '.join(prefix + n for n in names)}"
            )
        tp, current = hints[key], getattr(cfg, key)
        if _is_dataclass_type(tp) and isinstance(value, dict):
            changes[key] = apply(current, value, prefix=f"{prefix}{key}.")
        elif (typing.get_origin(tp) is dict or tp is dict) and isinstance(value, dict):
            changes[key] = _merge(current, value)
        else:
            changes[key] = _coerce(value, tp, prefix + key)
    return dataclasses.replace(cfg, **changes)


def parse_overrides(items: list[str]) -> dict:
    """``["a.b=1", "c=[1, 2]"]`` -> ``{"a": {"b": 1}, "c": [1, 2]}`` (values parsed as YAML)."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}' conflicts with another override of '{p}'")
        node[parts[-1]] = value
    return out


def preset_path(name: str) -> Path:
    """A preset name (``configs/<name>.yaml``) or a path to a YAML file."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    q = CONFIGS_DIR / f"{name}.yaml"
    if q.exists():
        return q
    known = sorted(f.stem for f in CONFIGS_DIR.glob("*.yaml"))
    raise ConfigError(f"no config preset '{name}'; presets in {CONFIGS_DIR}: {', '.join(known) or 'none'}")


def load_yaml(path) -> dict:
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping of keys")
    return data


def build(cls, presets: list[str] | None = None, overrides: list[str] | dict | None = None):
    """Defaults, then each preset in order, then overrides; then ``validate()``."""
    cfg = cls()
    for name in presets or []:
        cfg = apply(cfg, load_yaml(preset_path(name)))
    if overrides:
        cfg = apply(cfg, overrides if isinstance(overrides, dict) else parse_overrides(overrides))
    validate(cfg)
    return cfg


def validate(cfg) -> None:
    """Run ``validate()`` of the config and of its nested configs."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            validate(v)
    if hasattr(cfg, "validate"):
        cfg.validate()


def to_dict(cfg) -> dict:
    def plain(v):
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(cfg).items()}


def to_yaml(cfg) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
