"""The `diffusers` image generator on a tiny random-weight Stable Diffusion pipeline built from
configs and saved to disk: loading by local path, seeded (reproducible) generation, clear errors
for a missing model, and a stablellava run through the CLI. Offline; skipped without diffusers."""
from __future__ import annotations

import asyncio
import json

import pytest
from PIL import Image

pytest.importorskip("diffusers")

import allava.synth.tasks  # noqa: F401 - registers the tasks
from allava.config import ConfigError
from allava.errors import USER_ERRORS
from allava.synth.base import TASKS, Item
from allava.synth.cli import main as synth_main
from allava.synth.imagegen import DiffusersGenerator, build_generator
from allava.synth.teachers.scene import SceneTeacher

SIZE = 16  # pixels; the tiny VAE does not downsample, so the latents are 16x16 too


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny convolutions gain nothing from threads, and on a shared CPU the thread pool's spinning
    makes each image take seconds instead of ~50 ms."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> str:
    """A StableDiffusionPipeline with random weights (~350 KB) saved with save_pretrained."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    root = tmp_path_factory.mktemp("tiny-sd")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz0123456789(),.\"'":
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n")  # no merges: character-level BPE
    tokenizer = CLIPTokenizer(str(root / "vocab.json"), str(root / "merges.txt"), model_max_length=32)

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=SIZE, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4)
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8,), latent_channels=4, norm_num_groups=4,
                        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",), sample_size=SIZE)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=32, projection_dim=16, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(root / "pipe")
    return str(root / "pipe")


def test_generates_seeded_images_from_a_local_pipeline(tiny_sd, tmp_path):
    gen = build_generator("diffusers", model=tiny_sd, image_size=SIZE, steps=2, device="cpu", unknown="ignored")
    assert isinstance(gen, DiffusersGenerator) and gen.grammar == "" and gen.blocking
    asyncio.run(gen.asave("a red car in the sky", tmp_path / "images" / "a.png", seed=123))
    with Image.open(tmp_path / "images" / "a.png") as im:
        im.verify()
    with Image.open(tmp_path / "images" / "a.png") as im:
        assert im.format == "PNG" and im.size == (SIZE, SIZE) and im.mode == "RGB"
        first = im.tobytes()
    assert not list(tmp_path.glob("images/*.tmp"))
    assert gen.generate("a red car in the sky", 123).tobytes() == first  # same seed, same image
    assert gen.generate("a red car in the sky", 124).tobytes() != first
    # a fresh load (a resumed run) gives the same image for the same seed (the task seeds by item id)
    again = build_generator("diffusers", model=tiny_sd, image_size=SIZE, steps=2, device="cpu")
    assert again.generate("a red car in the sky", 123).tobytes() == first
    # without --image-size: the pipeline's own default (unet sample size x VAE scale factor)
    assert build_generator("diffusers", model=tiny_sd, steps=1, device="cpu").generate("a tree", 1).size == (SIZE, SIZE)


@pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks` argument is deprecated")
def test_missing_model_or_bad_size_is_a_user_error(tiny_sd, tmp_path):
    for missing in (str(tmp_path / "no-such-pipeline"), "./no/such/pipeline"):
        with pytest.raises(ConfigError, match="does not exist") as e:
            build_generator("diffusers", model=missing)
        assert isinstance(e.value, USER_ERRORS)
    (tmp_path / "empty").mkdir()  # a folder, but not a pipeline
    with pytest.raises(ConfigError, match="cannot load pipeline .*model_index.json"):
        build_generator("diffusers", model=str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="cannot load pipeline"):  # HF_HUB_OFFLINE=1 (conftest): not cached
        build_generator("diffusers", model="no-such-org/no-such-model")
    with pytest.raises(ConfigError, match="multiple of 8"):
        build_generator("diffusers", model=tiny_sd, image_size=20)
    with pytest.raises(ConfigError, match="needs a model"):
        build_generator("diffusers")
    with pytest.raises(ConfigError, match="unknown image generator 'dall-e'"):
        build_generator("dall-e")


def test_stablellava_with_diffusers_backend(tiny_sd, tmp_path, capsys):
    import argparse

    t = TASKS["stablellava"]()
    t.bind(tmp_path / "direct", argparse.Namespace(imagegen="diffusers", imagegen_model=tiny_sd, image_size=SIZE,
                                                   imagegen_steps=2, imagegen_guidance=1.0))
    assert isinstance(t.generator, DiffusersGenerator) and t.generator.image_size == SIZE
    assert (t.generator.steps, t.generator.guidance) == (2, 1.0)
    line = asyncio.run(t.run(Item("ab/color/0", fields={"ability": "color"}), SceneTeacher()))
    assert line["output"]["generator"] == "diffusers" and line["output"]["conversations"]
    with Image.open(tmp_path / "direct" / line["image"]) as im:
        assert im.size == (SIZE, SIZE)

    # the CLI path: --imagegen diffusers --imagegen-model PATH, offline scene teacher
    out = tmp_path / "run"
    args = ["stablellava", "--images", "abilities:1", "--out", str(out), "--no-progress", "--teacher", "scene",
            "--imagegen", "diffusers", "--imagegen-model", tiny_sd, "--image-size", str(SIZE), "--imagegen-steps", "2", "--limit", "2"]
    assert synth_main(args) == 0
    records = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for rec in records:
        assert rec["output"]["generator"] == "diffusers" and rec["output"]["conversations"]
        with Image.open(out / rec["image"]) as im:
            assert im.size == (SIZE, SIZE)
    assert len(list((out / "images").glob("*.png"))) == 2

    capsys.readouterr()
    bad = [*args[:4], str(tmp_path / "bad"), *args[5:]]
    bad[bad.index(tiny_sd)] = str(tmp_path / "missing-pipeline")
    assert synth_main(bad) == 2
    err = capsys.readouterr().err
    assert "missing-pipeline does not exist" in err and "Traceback" not in err
