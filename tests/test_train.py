"""Two-stage training on tiny backbones: freezing per stage, mixing, and exact resume after SIGKILL."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from allava.data.dataset import mix_indices
from allava.train.sampler import ModalityGroupedSampler


def write_recipe(path: Path, backbones, data, out: Path, stage1_train=("projector", "language_model"), **stage) -> Path:
    common = {"max_steps": 6, "global_batch_size": 8, "per_device_batch_size": 4, "lr": 2e-3, "min_lr": 2e-4,
              "save_steps": 2, "logging_steps": 1, "save_total_limit": 3, **stage}
    recipe = {
        "output_dir": str(out),
        "threads": 1,
        "model": {"vision_tower": backbones["clip"], "language_model": backbones["lm"], "template": "human_assistant"},
        "stages": {
            "stage1": {"data": [{"path": data["captions"], "image_folder": data["images"]},
                                {"path": data["text"], "repeat": 2}], "train": list(stage1_train), **common},
            "stage2": {"data": [{"path": data["vqa"], "image_folder": data["images"]}, {"path": data["text"]}],
                       "train": ["projector", "language_model"], **common},
        },
    }
    path.write_text(yaml.safe_dump(recipe))
    return path


def cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.Popen([sys.executable, "-m", "allava.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def losses(out: Path, stage: str) -> dict[int, float]:
    return {s: v for s, v in json.loads((out / stage / "summary.json").read_text())["losses"]}


def test_mix_ratios_follow_repeats():
    idx = mix_indices([10, 4], [1.0, 2.5], seed=0)
    assert sum(1 for s, _ in idx if s == 0) == 10
    assert sum(1 for s, _ in idx if s == 1) == 10  # 2 copies of 4 + half of 4


def test_modality_batches_are_pure_and_order_is_seeded():
    lengths = [5] * 20 + [-3] * 12
    sampler = ModalityGroupedSampler(lengths, batch_size=4, seed=1)
    order = list(sampler)
    assert sorted(order) == list(range(32))
    for b in range(0, 32, 4):
        signs = {lengths[i] > 0 for i in order[b:b + 4]}
        assert len(signs) == 1
    assert list(ModalityGroupedSampler(lengths, 4, seed=1)) == order
    sampler.set_epoch(1)
    assert list(sampler) != order


def test_two_stages_freeze_per_recipe_and_chain(backbones, tiny_data, tmp_path):
    from allava.train.stages import load_recipe, run_recipe

    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", backbones, tiny_data, tmp_path / "run",
                                      stage1_train=("projector",)))
    s1, s2 = run_recipe(recipe, progress=False)
    assert set(s1.trainable) == {"projector"} and set(s2.trainable) == {"projector", "language_model"}
    assert s1.steps == 6 and s2.steps == 6
    # a projector-only stage drops text-only samples (they would give no gradient), and says so
    assert s1.data["examples_in_mix"] == 24 and s1.data["skipped"] == {"text-only record in a stage that trains only image parts": 24}
    assert s2.data["examples_in_mix"] == 24 + 24
    # stage 1 trained only the projector: the LM weights are unchanged; stage 2 starts from stage 1.
    from transformers import AutoModelForCausalLM, LlavaForConditionalGeneration

    lm = AutoModelForCausalLM.from_pretrained(backbones["lm"])
    m1 = LlavaForConditionalGeneration.from_pretrained(s1.model_dir)
    m2 = LlavaForConditionalGeneration.from_pretrained(s2.model_dir)
    assert torch.equal(m1.model.language_model.layers[0].mlp.up_proj.weight, lm.model.layers[0].mlp.up_proj.weight)
    assert not torch.equal(m2.model.language_model.layers[0].mlp.up_proj.weight, lm.model.layers[0].mlp.up_proj.weight)
    assert not torch.equal(m1.model.multi_modal_projector.linear_1.weight, m2.model.multi_modal_projector.linear_1.weight)
    # rerunning a finished recipe does nothing
    again = run_recipe(recipe, progress=False)
    assert all(r.skipped for r in again)


def test_invalid_records_are_skipped_and_counted(backbones, tiny_data, tmp_path):
    bad = tmp_path / "bad.jsonl"
    good = Path(tiny_data["vqa"]).read_text()
    bad.write_text(good + '{"id": "broken", "image": "missing.png", "conversations": []}\nnot json\n')
    from allava.train.stages import load_recipe, run_recipe

    path = write_recipe(tmp_path / "r.yaml", backbones, tiny_data, tmp_path / "run", max_steps=1)
    recipe = load_recipe(path, [f"stages.stage2.data.0.path={bad}", "stages.stage1.enabled=false"])
    (s2,) = run_recipe(recipe, progress=False)
    assert sum(s2.data["skipped"].values()) == 2
    assert any(e.startswith("broken:") for e in s2.data["skipped_examples"])


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_and_continues_the_loss_curve(backbones, tiny_data, tmp_path):
    ref = tmp_path / "ref"
    write_recipe(tmp_path / "ref.yaml", backbones, tiny_data, ref)
    proc = cli("train", "--config", str(tmp_path / "ref.yaml"), "--no-progress")
    assert proc.wait(timeout=300) == 0, proc.stdout.read()

    for kill_stage in ("stage1", "stage2"):
        out = tmp_path / f"killed-{kill_stage}"
        write_recipe(tmp_path / f"{kill_stage}.yaml", backbones, tiny_data, out)
        proc = cli("train", "--config", str(tmp_path / f"{kill_stage}.yaml"), "--no-progress")
        marker = out / kill_stage / "checkpoint-4" / "trainer_state.json"
        deadline = time.time() + 300
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert not (out / kill_stage / "summary.json").exists()

        rerun = cli("train", "--config", str(tmp_path / f"{kill_stage}.yaml"), "--no-progress")
        assert rerun.wait(timeout=300) == 0, rerun.stdout.read()
        for stage in ("stage1", "stage2"):
            assert json.loads((out / stage / "summary.json").read_text())["feature_cache"]["used"]  # resumed from the store
            resumed, reference = losses(out, stage), losses(ref, stage)
            assert max(resumed) == max(reference) == 6  # same step count
            for step, loss in resumed.items():  # the resumed curve continues the interrupted one
                assert loss == pytest.approx(reference[step], rel=1e-4, abs=1e-5), (stage, step)


def test_text_only_batches_never_run_the_vision_tower(backbones, tiny_data):
    from allava.data.dataset import Collator, ConversationDataset, DataSource
    from allava.data.tokenize import ConversationEncoder
    from allava.model.build import ModelSpec, build_model

    model, processor = build_model(ModelSpec(vision_tower=backbones["clip"], language_model=backbones["lm"]))
    calls = []
    model.model.vision_tower.register_forward_hook(lambda *a: calls.append(1))
    enc = ConversationEncoder(processor.tokenizer, "vicuna_v1", "<image>", model.config.image_seq_length, 512)
    collate = Collator(processor.tokenizer.pad_token_id)
    text = ConversationDataset([DataSource(tiny_data["text"])], enc, processor.image_processor)
    batch = collate([text[i] for i in range(4)])
    assert "pixel_values" not in batch
    assert model(**batch).loss.requires_grad and calls == []
    images = ConversationDataset([DataSource(tiny_data["vqa"], tiny_data["images"])], enc, processor.image_processor)
    mixed = collate([images[0], text[0], images[1]])
    assert mixed["pixel_values"].shape[0] == 2  # only the image samples carry pixels
    model(**mixed)
    assert calls == [1]


def test_rerun_after_the_last_checkpoint_trains_no_extra_step(backbones, tiny_data, tmp_path):
    """Killed after the checkpoint at max_steps but before final/: the rerun must not train on. The
    Trainer resumes mid-epoch (stage 1 here has 9 steps per epoch, max_steps 6) and would take one
    more step before it checks max_steps."""
    import shutil

    from allava.train.stages import load_recipe, run_recipe

    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", backbones, tiny_data, tmp_path / "run"),
                         ["stages.stage2.enabled=false", "stages.stage1.keep_last_checkpoint=true"])
    (first,) = run_recipe(recipe, progress=False)
    stage = tmp_path / "run" / "stage1"
    (stage / "summary.json").unlink()
    shutil.rmtree(stage / "final")
    assert (stage / "checkpoint-6" / "trainer_state.json").exists()  # kept as asked
    (again,) = run_recipe(recipe, progress=False)
    assert again.steps == first.steps == 6
    assert again.losses == first.losses
