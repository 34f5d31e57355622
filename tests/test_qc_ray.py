"""The Ray Data executor gives byte-identical outputs to the local one (a local 2-CPU Ray cluster
started by the test); without Ray installed, `--executor ray` is a one-line error."""
from __future__ import annotations

import json
import sys

import pytest

from allava.config import ConfigError
from allava.quality.config import parse_config
from allava.quality.executor import LocalExecutor, RayExecutor, is_model_op, make_executor
from allava.quality.noise import inject_noise
from allava.quality.pipeline import run_qc_pipeline
from allava.quality.teacher_noise import inject_teacher_noise


def _config(lm: str):
    return parse_config({"ops": [
        {"name": "image_readability", "thresholds": {"decodable": {"min": 1}, "sharpness": {"min": 0.025},
                                                     "jpeg_ghost": {"min": 0.2}}},
        {"name": "image_dedup", "min": 1, "batch_size": 7},
        {"name": "text_completeness", "min": 1, "min_words": 6},
        {"name": "text_dedup", "max": 0.9},
        {"name": "refusal", "thresholds": {"refusal": {"max": 0}, "language_ok": {"min": 1}}},
        {"name": "qa_adequacy", "min": 1},
        {"name": "cross_image_dedup", "max": 0},
        {"name": "text_readability", "model": lm, "prefix": "eos", "batch_size": 5},  # a model op: an actor pool
        {"name": "instruction_diversity"},
        {"name": "balance"}]})


@pytest.mark.slow
def test_ray_and_local_executors_write_identical_outputs(tmp_path, backbones):
    import test_qc_helpers as h

    pytest.importorskip("ray")
    path = h.build_dataset(tmp_path / "d", n=80)
    clean = [json.loads(x) for x in path.read_text().splitlines()]
    noisy, injected = inject_noise(clean, tmp_path / "d" / "images", rate=0.15, seed=1)
    noisy, more = inject_teacher_noise(noisy, tmp_path / "d" / "images", rate=0.15, seed=2,
                                       kinds=("refusal", "language", "terse", "jpeg", "blank"))
    assert injected and more
    path.write_text("".join(json.dumps(r) + "\n" for r in noisy))
    cfg = _config(backbones["lm"])
    assert is_model_op(cfg.ops[7].op) and not is_model_op(cfg.ops[0].op)
    local = run_qc_pipeline(path, cfg, tmp_path / "local", progress=False, plots=False, executor=LocalExecutor())
    ray_exec = RayExecutor(num_cpus=2)
    try:
        ray = run_qc_pipeline(path, _config(backbones["lm"]), tmp_path / "ray", progress=False, plots=False,
                              executor=ray_exec)
    finally:
        ray_exec.close()
    assert local.removed > 10 and local.kept > 40
    for name in ("kept.jsonl", "removed.jsonl", "stats.jsonl"):
        assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "ray" / name).read_bytes(), name
    assert ray.computed == local.computed


def test_ray_executor_without_ray_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'allava\[ray\]'"):
        make_executor("ray")
    with pytest.raises(ConfigError, match="known executors"):
        make_executor("spark")


def test_cli_ray_address_needs_the_ray_executor(tmp_path, capsys):
    from allava.cli import main

    (tmp_path / "r.jsonl").write_text('{"id": "a", "conversations": [{"from": "human", "value": "hi"}, '
                                      '{"from": "gpt", "value": "hello there"}]}\n')
    assert main(["qc", str(tmp_path / "r.jsonl"), "--config", "cheap", "--out", str(tmp_path / "q"),
                 "--ray-address", "auto"]) == 2
    assert "--ray-address needs --executor ray" in capsys.readouterr().err
