"""The command line: user mistakes end in one clear line and a non-zero exit, never a traceback."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

from allava.cli import VERBS


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "allava.cli", *args], capture_output=True, text=True,
                          input=stdin, timeout=300)


def test_every_verb_is_real():
    assert set(VERBS) == {"train", "data", "chat", "quickstart", "synth", "qc", "eval", "serve", "export"}


def test_train_with_missing_config_is_a_clear_error(tmp_path):
    r = run("train", "--config", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2 and "no such config file" in r.stderr and "Traceback" not in r.stderr


def test_train_with_unknown_key_names_it(tmp_path, backbones, tiny_data):
    from tests.test_train import write_recipe

    path = write_recipe(tmp_path / "r.yaml", backbones, tiny_data, tmp_path / "run")
    r = run("train", "--config", str(path), "stages.stage1.learning_rate=1")
    assert r.returncode == 2 and "learning_rate" in r.stderr and "Traceback" not in r.stderr


def test_train_with_missing_model_path_is_a_clear_error(tmp_path, tiny_data, backbones):
    from tests.test_train import write_recipe

    path = write_recipe(tmp_path / "r.yaml", backbones, tiny_data, tmp_path / "run")
    r = run("train", "--config", str(path), f"model.language_model={tmp_path / 'no-such-lm'}")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "no-such-lm" in r.stderr


def test_data_validate_reports_bad_records(tmp_path, tiny_data):
    lines = Path(tiny_data["vqa"]).read_text().splitlines()[:3]
    bad = {"id": "wrong-order", "image": "0.png", "conversations": [
        {"from": "gpt", "value": "<image>\nhi"}, {"from": "human", "value": "x"}]}
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines + [json.dumps(bad), "{oops"]) + "\n")
    r = run("data", "validate", str(path), "--image-folder", tiny_data["images"])
    assert r.returncode == 1
    assert "wrong-order:" in r.stdout and "line:5" in r.stdout
    r = run("data", "validate", tiny_data["vqa"], "--image-folder", tiny_data["images"])
    assert r.returncode == 0, r.stdout


def test_chat_holds_a_multi_turn_conversation(backbones, tiny_data, tmp_path):
    from allava.evaluate.generate import Answerer
    from allava.model.build import ModelSpec, Recipe, build_model, save_checkpoint
    from allava.serve.chat import Chat, run_chat

    spec = ModelSpec(vision_tower=backbones["clip"], language_model=backbones["lm"])
    model, processor = build_model(spec)
    save_checkpoint(model, processor, Recipe(spec=spec), tmp_path / "ckpt")
    chat = Chat(Answerer(tmp_path / "ckpt"), Path(tiny_data["images"]) / "0.png", max_new_tokens=3)
    out = io.StringIO()
    run_chat(chat, io.StringIO("What colour is it?\nAre you sure?\n/reset\nAgain?\n/quit\n"), out, interactive=False)
    assert out.getvalue().count("assistant>") == 3
    assert [t["from"] for t in chat.history] == ["human", "gpt"]  # reset started a new conversation
    assert chat.history[0]["value"].startswith("<image>\n")

    r = run("chat", "--model", str(tmp_path / "ckpt"), "--image", str(tmp_path / "missing.png"), stdin="hi\n")
    assert r.returncode == 2 and "missing.png" in r.stderr and "Traceback" not in r.stderr
    r = run("chat", "--model", str(tmp_path / "ckpt"), "--image", str(Path(tiny_data["images"]) / "0.png"),
            "--max-new-tokens", "2", stdin="What colour?\nAnd now?\n")
    assert r.returncode == 0 and r.stdout.count("assistant>") == 2


def test_normalize_follows_vqa_conventions():
    from allava.evaluate.synthetic import normalize

    assert normalize("Three.") == "3"
    assert normalize("The red circle") == "red circle"
    assert normalize(" Top-Left ") == "top left"
