"""``allava serve`` flags -> `ServeConfig` -> the server."""
from __future__ import annotations

import argparse
from dataclasses import fields

from allava.serve.config import ServeConfig

FLAGS: dict[str, tuple[type | None, str]] = {
    "host": (str, "address to bind; anything but loopback needs --api-key-env or --insecure-no-key"),
    "port": (int, "TCP port"),
    "served_model_name": (str, "the model's name in the API (default: the folder's name)"),
    "api_key_env": (str, "environment variable holding the key clients must send (Authorization: Bearer)"),
    "insecure_no_key": (None, "serve a non-loopback address without a key"),
    "max_batch_size": (int, "rows in the running batch, which requests join and leave at every token (1: no batching)"),
    "batch_window_ms": (float, "when nothing is running, the longest a request waits for the rest of a burst to share its prefill (the wait ends 5 ms after the last arrival)"),
    "no_prefix_cache": (None, "prefill every prompt whole instead of reusing the cached keys/values of the template's shared head"),
    "prefill_tokens": (int, "prompt tokens prefilled between two decode steps, at most (a longer prompt goes alone)"),
    "max_queue": (int, "requests queued or running before new ones get 429"),
    "max_new_tokens": (int, "largest max_tokens, also used when a request gives none"),
    "image_root": (str, "allow file:// image URLs below this folder"),
    "allow_remote_images": (None, "fetch http(s) image URLs (with --remote-timeout-s and --max-image-bytes)"),
    "remote_timeout_s": (float, "time limit for fetching one remote image"),
    "max_body_bytes": (int, "largest request body (413 above)"),
    "max_image_bytes": (int, "largest encoded image (413 above)"),
    "max_image_pixels": (int, "largest image in pixels, width x height (413 above)"),
    "max_images": (int, "most images in one conversation"),
    "device": (str, "cpu, cuda, cuda:N or mps (default: the CPU)"),
    "dtype": (str, "float32, bfloat16 or float16"),
    "threads": (int, "torch CPU threads (on a shared or busy machine 1 can be far faster than the default)"),
}


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="checkpoint folder (ours or any llava-hf one)")
    defaults = {f.name: f.default for f in fields(ServeConfig)}
    for name, (kind, help) in FLAGS.items():
        flag = "--" + name.replace("_", "-")
        if kind is None:
            p.add_argument(flag, action="store_true", help=help)
        else:
            p.add_argument(flag, type=kind, default=defaults[name], help=help,
                           **({"choices": ["float32", "bfloat16", "float16"]} if name == "dtype" else {}))


def run_serve(args: argparse.Namespace) -> int:
    from allava.config import ConfigError
    from allava.model.paths import check_model_path

    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"allava serve needs FastAPI and uvicorn ({e.name} is missing): "
                          "pip install 'allava[serve]'") from None
    from allava.serve.server import serve

    cfg = ServeConfig(model=args.model, **{name: getattr(args, name) for name in FLAGS})
    check_model_path(str(args.model), "--model")
    if cfg.device:
        from allava.evaluate.generate import check_device

        check_device(cfg.device)
    serve(cfg)
    return 0
