"""Training at scale, measured: global batch from the world size, length grouping that removes
padding on one device, rates that survive a resume, checkpoints cleaned up, the progress line and
the logging integrations."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
from transformers import TrainerCallback

from allava.train.sampler import ModalityGroupedSampler, default_megabatch
from tests.test_train import write_recipe


def padded_tokens(order: list[int], lengths: list[int], batch: int) -> int:
    """Tokens a pad-to-longest collator feeds for this order."""
    return sum(max(abs(lengths[i]) for i in order[k:k + batch]) * len(order[k:k + batch])
               for k in range(0, len(order), batch))


def test_length_grouping_removes_padding_on_one_device_without_accumulation():
    """LLaVA's LengthGroupedSampler (llava/train/llava_trainer.py, megabatch = world_size x
    accumulation batches) sorts within one batch on one device without accumulation and removes no
    padding; ours sorts megabatches of transformers' get_length_grouped_indices size (50 batches)."""
    rng = random.Random(0)
    lengths = [rng.randint(600, 1400) for _ in range(2000)] + [-rng.randint(20, 900) for _ in range(1000)]
    real = sum(abs(n) for n in lengths)
    assert default_megabatch(len(lengths), 8) == 50
    grouped = padded_tokens(list(ModalityGroupedSampler(lengths, 8, seed=0)), lengths, 8) / real
    one_batch = padded_tokens(list(ModalityGroupedSampler(lengths, 8, seed=0, megabatch=1)), lengths, 8) / real
    assert grouped < 1.03 < 1.15 < one_batch, (grouped, one_batch)
    # small data: fewer batches per megabatch, so the order stays random; never below one optimizer step
    assert default_megabatch(64, 8) == 2 and default_megabatch(64, 8, accumulation=4) == 4


def test_global_batch_and_accumulation_come_from_the_world_size(tmp_path, monkeypatch):
    from allava.config import ConfigError
    from allava.train.stages import StageConfig, global_batch, training_args

    cfg = StageConfig(data=[], global_batch_size=32, per_device_batch_size=4, report_to="none")
    args = training_args(cfg, tmp_path, False, False)
    assert args.world_size == 1 and args.gradient_accumulation_steps == 8 and global_batch(args) == 32
    with pytest.raises(ConfigError, match="global_batch_size: 30 is not a multiple of per_device_batch_size 4"):
        training_args(StageConfig(data=[], global_batch_size=30, per_device_batch_size=4), tmp_path, False, False)
    # two processes (as torchrun sets them; the process group itself is tested in test_train_dist.py)
    from allava.train.preflight import check_stage

    monkeypatch.setenv("WORLD_SIZE", "8")
    with pytest.raises(ValueError, match=r"32 is not a multiple of per_device_batch_size 8 x 8 device"):
        check_stage(StageConfig(data=[], global_batch_size=32, per_device_batch_size=8))


def test_report_to_reaches_the_trainer_and_a_missing_integration_is_one_line(tmp_path):
    from allava.train.preflight import check_stage
    from allava.train.stages import StageConfig, training_args

    assert training_args(StageConfig(data=[], report_to="none"), tmp_path, False, False).report_to in ([], "none", ["none"])
    with pytest.raises(ValueError, match="report_to: choose none, tensorboard, wandb, got 'mlflow'"):
        check_stage(StageConfig(data=[], report_to="mlflow"))
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None and importlib.util.find_spec("tensorboardX") is None:
        with pytest.raises(ValueError, match="report_to: tensorboard needs the tensorboard package"):
            check_stage(StageConfig(data=[], report_to="tensorboard"))
    else:
        assert training_args(StageConfig(data=[], report_to="tensorboard"), tmp_path, False, False).report_to == ["tensorboard"]


class Stop(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        if state.global_step == 3:
            raise KeyboardInterrupt


def test_resumed_stage_counts_every_process_and_drops_its_checkpoints(backbones, tiny_data, tmp_path, capsys):
    """tokens and rates of a resumed stage are the whole run's (the tokens equal an uninterrupted
    run's), the last checkpoint-N goes once final/ is written, and the progress line shows loss,
    lr, samples/s and tokens/s."""
    from allava.train.stages import load_recipe, run_stage

    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", backbones, tiny_data, tmp_path / "run"))
    stage, spec = recipe.stages["stage2"], recipe.model
    ref = run_stage("stage2", stage, spec, tmp_path / "plain", spec, progress=True)
    err = capsys.readouterr().err
    for key in ("stage2 steps", "loss=", "lr=", "samples_s=", "tokens_s="):
        assert key in err, key
    assert not list((tmp_path / "plain").glob("checkpoint-*")) and (tmp_path / "plain" / "final").is_dir()
    with pytest.raises(KeyboardInterrupt):
        run_stage("stage2", stage, spec, tmp_path / "resumed", spec, progress=False, callbacks=[Stop()])
    first = sorted(Path(tmp_path / "resumed").glob("checkpoint-*"))
    assert [p.name for p in first] == ["checkpoint-2"]
    import json

    first_s = json.loads((first[0] / "trainer_state.json").read_text())["stateful_callbacks"]["StageProgress"]
    assert first_s["attributes"]["train_s"] > 0
    got = run_stage("stage2", stage, spec, tmp_path / "resumed", spec, progress=False)
    assert got.steps == ref.steps == 6
    assert got.tokens == ref.tokens > 0  # both processes' tokens (the resumed one alone saw 4 steps' worth)
    assert got.train_s > first_s["attributes"]["train_s"]  # the clock continued from the checkpoint's
    assert got.tokens_per_s == pytest.approx(got.tokens / got.train_s)
    assert not list((tmp_path / "resumed").glob("checkpoint-*"))
