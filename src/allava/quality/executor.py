"""Where operators run: kept apart from the operators themselves (distilabel's split of steps and
the pipeline that schedules them), so the same op code runs in-process or on a Ray cluster.

An executor has one job: `run(op, method, records)` -> one value per record, in order, where
`method` is "compute" (an `Op`'s stats) or "features" (a `DatasetOp`'s per-record part). The
pipeline does the rest identically for every executor: cache lookups, each distinct record once,
dataset-op finalize, decisions and outputs. So kept.jsonl / removed.jsonl cannot depend on the
executor as long as each op is deterministic per record.

* `LocalExecutor` (default): in-process, in the op's `batch_size`, streaming 256-record chunks.
* `RayExecutor`: Ray Data (`ray.data`); every op is a `map_batches` over the uncached records by
  an actor pool (`concurrency` actors) with batched calls: a model op (one with a model setting)
  loads its model once per actor, one GPU each where the cluster has GPUs; a rule op keeps its
  per-run state (the per-image memo). The whole input is one chunk (Ray schedules the blocks), and
  order is preserved.
"""
from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from typing import Any, Protocol

from allava.quality.base import Op, QCRecord

EXECUTORS = ("local", "ray")
MODEL_SETTINGS = ("model", "iqa_model")  # a non-empty one of these makes an op a model op (actor pool)


class Executor(Protocol):
    name: str
    chunk_size: int  # records the pipeline hands over at once

    def run(self, op: Op, method: str, records: list[QCRecord]) -> list[Any]: ...

    def close(self) -> None: ...


class LocalExecutor:
    name = "local"
    chunk_size = 256

    def run(self, op: Op, method: str, records: list[QCRecord]) -> list[Any]:
        fn = getattr(op, method)
        bs = max(1, op.settings.batch_size)
        out: list[Any] = []
        for i in range(0, len(records), bs):
            part = records[i:i + bs]
            values = fn(part)
            if len(values) != len(part):
                raise RuntimeError(f"{op.name}.{method} returned {len(values)} values for {len(part)} records")
            out += values
        return out

    def close(self) -> None:
        pass


def is_model_op(op: Op) -> bool:
    return any(getattr(op.settings, k, None) for k in MODEL_SETTINGS)


class _OpWorker:
    """A Ray Data callable: builds the op once (per actor, or per task) and maps batches of pickled
    records to JSON values, so any value the local executor caches comes back the same."""

    def __init__(self, blob: bytes, method: str):
        self.op = pickle.loads(blob)
        self.method = method

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        records = [pickle.loads(b) for b in batch["rec"]]
        values = getattr(self.op, self.method)(records)
        return {"i": batch["i"], "value": [json.dumps(v, default=float) for v in values]}


@dataclass
class RayExecutor:
    """`address`: None starts a local Ray (num_cpus CPUs), "auto" joins the running cluster, or ray://HOST:PORT."""

    address: str | None = None
    num_cpus: int | None = None
    concurrency: int = 2  # actors per model op
    name = "ray"
    chunk_size = 1 << 62  # one chunk: Ray splits it into blocks itself

    def __post_init__(self) -> None:
        try:
            import ray
        except ImportError:
            from allava.config import ConfigError

            raise ConfigError("--executor ray needs Ray Data: pip install 'allava[ray]' (or pip install 'ray[data]')"
                              ) from None
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.address:
                kw["address"] = self.address
            elif self.num_cpus:
                kw["num_cpus"] = self.num_cpus
            ray.init(**kw)
            self._started = True
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False

    def run(self, op: Op, method: str, records: list[QCRecord]) -> list[Any]:
        if not records:
            return []
        import ray.data

        ds = ray.data.from_items([{"i": i, "rec": pickle.dumps(r)} for i, r in enumerate(records)])
        blob = pickle.dumps(op)
        bs = max(1, op.settings.batch_size)
        # every op as an actor pool: a model op loads its model once per actor (one GPU each where the
        # cluster has GPUs), a rule op keeps its per-run state (the per-image memo) across batches
        gpus = 1 if is_model_op(op) and self._ray.cluster_resources().get("GPU", 0) >= 1 else 0
        ds = ds.map_batches(_OpWorker, fn_constructor_args=(blob, method), batch_size=bs,
                            concurrency=self.concurrency, num_gpus=gpus)
        rows = sorted(ds.take_all(), key=lambda row: int(row["i"]))
        if len(rows) != len(records):
            raise RuntimeError(f"ray executor: {op.name}.{method} returned {len(rows)} rows for {len(records)} records")
        return [json.loads(row["value"]) for row in rows]

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False


def make_executor(name: str, address: str | None = None) -> LocalExecutor | RayExecutor:
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address=address)
    from allava.config import ConfigError

    raise ConfigError(f"--executor {name!r}: known executors are {', '.join(EXECUTORS)}")
