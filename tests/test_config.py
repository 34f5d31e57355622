"""Recipes: dotted overrides, typos are errors, numbers are numbers."""
from __future__ import annotations

import pytest

from allava.config import ConfigError, apply_overrides, from_dict, load_yaml
from allava.train.stages import StageConfig, TrainRecipe


def test_dotted_overrides_reach_nested_keys_and_list_items():
    raw = {"stages": {"s1": {"lr": 1.0, "data": [{"path": "a"}, {"path": "b"}]}}}
    apply_overrides(raw, ["stages.s1.lr=0.5", "stages.s1.data.1.path=c", "stages.s1.train=[projector]"])
    assert raw["stages"]["s1"]["lr"] == 0.5 and raw["stages"]["s1"]["data"][1]["path"] == "c"
    assert raw["stages"]["s1"]["train"] == ["projector"]


def test_yaml_exponents_without_a_dot_are_numbers():
    cfg = from_dict(StageConfig, {"data": [], "lr": "2e-5", "projector_lr": "1e-3", "max_steps": "7"})
    assert (cfg.lr, cfg.projector_lr, cfg.max_steps) == (2e-5, 1e-3, 7)


@pytest.mark.parametrize("bad, message", [
    ({"data": [], "learning_rate": 1}, "unknown keys"),
    ({"data": [], "lr": "fast"}, "expected a number"),
    ({"data": [{"path": "x", "repeats": 2}]}, "unknown keys"),
    ({"lr": 1}, "data"),
])
def test_mistakes_are_config_errors(bad, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(StageConfig, bad)


def test_missing_file_and_bad_override(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_yaml(tmp_path / "x.yaml")
    (tmp_path / "r.yaml").write_text("output_dir: o\n")
    with pytest.raises(ConfigError, match="not key=value"):
        load_yaml(tmp_path / "r.yaml", ["oops"])
    with pytest.raises(ConfigError, match="model"):
        from_dict(TrainRecipe, load_yaml(tmp_path / "r.yaml"))
