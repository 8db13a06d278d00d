"""Configs: defaults, presets, key=value overrides; bad input fails before work with a clear message."""

from dataclasses import dataclass, field
from typing import Literal

import pytest

from rl import config as C
from rl.loop import Common


@dataclass
class Net:
    hidden: tuple[int, ...] = (256, 256)
    activation: Literal["relu", "tanh"] = "relu"


@dataclass
class Cfg(Common):
    lr: float = 3e-4
    gamma: float = 0.99
    utd: int = 1
    use_layernorm: bool = False
    net: Net = field(default_factory=Net)
    note: str | None = None


def test_defaults_and_typed_overrides():
    cfg = C.build(
        Cfg,
        overrides=[
            "lr=1e-3",
            "utd=2",
            "total_steps=1e6",
            "use_layernorm=true",
            "net.hidden=[64, 64]",
            "net.activation=tanh",
            "env_options.pixels=true",
            "note=null",
            "seed=7",
        ],
    )
    assert cfg.lr == 1e-3 and isinstance(cfg.lr, float)
    assert cfg.utd == 2 and cfg.total_steps == 1_000_000 and isinstance(cfg.total_steps, int)
    assert cfg.use_layernorm is True and cfg.net == Net((64, 64), "tanh")
    assert cfg.env_options == {"pixels": True} and cfg.note is None and cfg.seed == 7


def test_unknown_key_lists_valid_keys_and_close_match():
    with pytest.raises(
        C.ConfigError, match=r"unknown config key 'lrr' \(did you mean lr\?\).*valid keys: .*gamma"
    ):
        C.build(Cfg, overrides=["lrr=1"])
    with pytest.raises(C.ConfigError, match=r"unknown config key 'net.hiden'.*net.hidden"):
        C.build(Cfg, overrides=["net.hiden=[1]"])


@pytest.mark.parametrize(
    "override,message",
    [
        ("utd=1.5", "utd=1.5: expected an integer"),
        ("lr=fast", "lr='fast': expected a number"),
        ("use_layernorm=maybe", "expected a bool"),
        ("net.activation=gelu", r"net.activation='gelu' is not valid; choices: 'relu', 'tanh'"),
        ("wandb=cloud", "choices: 'disabled', 'offline', 'online'"),
        ("net.hidden=12", "expected a list"),
        ("total_steps=0", "total_steps must be >= 1"),
        ("checkpoint_every=-5", "checkpoint_every must be >= 0"),
        ("env=gym:HalfCheeta-v5", "closest valid ids: gym:HalfCheetah-v5"),
        ("notakeyvalue", "is not key=value"),
    ],
)
def test_bad_values_fail_naming_the_key(override, message):
    with pytest.raises(C.ConfigError, match=message):
        C.build(Cfg, overrides=[override])


def test_presets_apply_in_order_then_overrides(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("lr: 0.01\nnet:\n  hidden: [32]\n")
    b = tmp_path / "b.yaml"
    b.write_text("lr: 0.02\n")
    cfg = C.build(Cfg, presets=[str(a), str(b)], overrides=["gamma=0.9"])
    assert cfg.lr == 0.02 and cfg.net.hidden == (32,) and cfg.gamma == 0.9
    bad = tmp_path / "bad.yaml"
    bad.write_text("nope: 1\n")
    with pytest.raises(C.ConfigError, match="unknown config key 'nope'"):
        C.build(Cfg, presets=[str(bad)])
    with pytest.raises(C.ConfigError, match="no config preset 'missing'"):
        C.build(Cfg, presets=["missing"])


def test_an_override_of_one_nested_dict_option_keeps_the_presets_others(tmp_path):
    """Dict-typed keys (``shaper.streams``, ``env_options``) merge key by key at every depth:
    a budget arm's ``shaper.streams.preference.capacity=100`` on the PEBBLE preset keeps its
    segment, query and schedule (a shallow merge replaced the whole ``preference`` dict)."""
    p = tmp_path / "p.yaml"
    p.write_text(
        "env_options: {a: 1, b: 2}\nshaper:\n  terms: [preference]\n"
        "  streams:\n    preference: {segment: 50, query: disagreement}\n"
    )
    cfg = C.build(Cfg, [str(p)], ["shaper.streams.preference.capacity=100", "env_options.b=3"])
    assert cfg.shaper.streams["preference"] == {"segment": 50, "query": "disagreement", "capacity": 100}
    assert cfg.env_options == {"a": 1, "b": 3}
    cfg = C.build(Cfg, [str(p)], ["shaper.streams.preference.segment=10"])
    assert cfg.shaper.streams["preference"] == {"segment": 10, "query": "disagreement"}


def test_round_trip_through_yaml(tmp_path):
    cfg = C.build(Cfg, overrides=["net.hidden=[8, 8]", "lr=0.5"])
    p = tmp_path / "c.yaml"
    p.write_text(C.to_yaml(cfg))
    assert C.build(Cfg, overrides=C.load_yaml(p)) == cfg


def test_shipped_presets_load():
    from rl import agents

    for preset in sorted(C.CONFIGS_DIR.glob("*.yaml")):
        agent = preset.stem.split("-")[0]
        if agent in agents.AGENTS:
            C.build(agents.get(agent).Config, presets=[preset.stem])
