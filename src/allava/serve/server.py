"""Start `allava serve`: load the checkpoint once, then uvicorn on the configured address.

`BackgroundServer` runs the same app on a thread (tests, benchmarks): a real socket on
127.0.0.1, a free port, and a bounded shutdown.
"""
from __future__ import annotations

import threading
import time

from allava.serve.config import ServeConfig


def load_engine(cfg: ServeConfig):
    from allava.evaluate.generate import Answerer
    from allava.serve.batching import Engine

    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    return Engine(Answerer(cfg.model, dtype=cfg.dtype, device=cfg.device), prefix_cache=not cfg.no_prefix_cache)


def serve(cfg: ServeConfig, engine=None) -> None:
    import uvicorn

    from allava.serve.app import create_app

    app = create_app(cfg, engine or load_engine(cfg))
    print(f"allava serve: {cfg.model_name} on http://{cfg.host}:{cfg.port}/ (API: /v1/chat/completions; "
          f"key: {'$' + cfg.api_key_env if cfg.api_key_env else 'none'}; batch <= {cfg.max_batch_size})", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", timeout_graceful_shutdown=5)


class BackgroundServer:
    """``with BackgroundServer(cfg, engine) as url:`` -- the app on a thread, torn down on exit."""

    def __init__(self, cfg: ServeConfig, engine):
        import uvicorn

        from allava.serve.app import create_app

        cfg.port = 0
        self.app = create_app(cfg, engine)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host=cfg.host, port=0, log_level="warning",
                                                    timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, name="allava-serve", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
