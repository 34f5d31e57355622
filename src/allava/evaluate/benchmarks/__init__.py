"""Benchmark registry: ``@register_benchmark("name")`` on a `Benchmark` subclass; one module each.

Users add their own by registering a class before calling the runner (or `get_benchmark`).
"""
from __future__ import annotations

from collections.abc import Callable

from allava.config import ConfigError
from allava.evaluate.benchmarks.base import Benchmark, BenchmarkError, Sample

BENCHMARKS: dict[str, type[Benchmark]] = {}


def register_benchmark(name: str) -> Callable[[type[Benchmark]], type[Benchmark]]:
    def wrap(cls: type[Benchmark]) -> type[Benchmark]:
        cls.name = name
        BENCHMARKS[name] = cls
        return cls
    return wrap


def get_benchmark(name: str) -> Benchmark:
    _load_builtin()
    try:
        return BENCHMARKS[name]()
    except KeyError:
        raise ConfigError(f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}") from None


def _load_builtin() -> None:
    from allava.evaluate.benchmarks import (  # noqa: F401  (imported for registration)
        emt,
        gqa,
        llava_bench,
        mmbench,
        mme,
        mmmu,
        mmvet,
        pope,
        scienceqa,
        seed,
        synthetic,
        textvqa,
        vicuna80,
        vizwiz,
        vqav2,
    )


__all__ = ["BENCHMARKS", "Benchmark", "BenchmarkError", "Sample", "get_benchmark", "register_benchmark"]
