"""Term kinds by name: what a config's ``shaper.streams.<name>.kind`` (or ``shaper.terms``)
resolves to. A kind is a registered name or ``module:Class``, so a term written in a notebook
or a script is nameable in a config, an experiment grid and a run's ``config.yaml``.

    from rl.rewards import register
    register("my_bonus", MyBonus)        # then: rl train ppo shaper.terms=[my_bonus]

This module imports nothing of the library: the built-in terms register themselves in
``rl.rewards``.
"""

from __future__ import annotations

import difflib
import importlib

TERMS: dict[str, type] = {}


def register(name: str, cls: type | None = None):
    """Register a term class under ``name`` (also usable as a class decorator)."""

    def add(c):
        if name in TERMS and TERMS[name] is not c:
            raise ValueError(f"term kind '{name}' is already registered as {TERMS[name].__qualname__}")
        TERMS[name] = c
        return c

    return add(cls) if cls is not None else add


def resolve(kind: str) -> type:
    """The class of a kind: a registered name, or ``module:Class`` imported."""
    if kind in TERMS:
        return TERMS[kind]
    if ":" in kind:
        module, _, qualname = kind.partition(":")
        if module == "__main__":
            raise ValueError(
                f"term kind '{kind}' lives in __main__, which another process cannot import; move it "
                "to a module (module:Class) or register it under a name in that module"
            )
        try:
            obj = importlib.import_module(module)
        except ImportError as e:
            raise ValueError(f"term kind '{kind}': cannot import module '{module}' ({e})") from None
        for part in qualname.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                raise ValueError(f"term kind '{kind}': module '{module}' has no '{qualname}'")
        return obj
    close = difflib.get_close_matches(kind, list(TERMS), n=3)
    raise ValueError(
        f"unknown term kind '{kind}'"
        + (f" (did you mean {', '.join(close)}?)" if close else "")
        + f"; registered: {', '.join(sorted(TERMS))}; or give module:Class"
    )


def kind_of(term) -> str:
    """The kind that rebuilds ``term``'s class: its registered name, else module:Class."""
    cls = type(term)
    for name, c in TERMS.items():
        if c is cls:
            return name
    return f"{cls.__module__}:{cls.__qualname__}"
