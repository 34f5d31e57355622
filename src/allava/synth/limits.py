"""Request- and token-per-minute limits as async token buckets.

Providers enforce RPM/TPM over short windows, so a bucket holds at most `burst_s` seconds of
allowance instead of a whole minute: a fresh run does not fire a minute's worth of requests in the
first second and collect a wall of 429s. A request larger than the bucket still goes once the
bucket is full (the level goes negative and later callers wait), so nothing deadlocks.
"""
from __future__ import annotations

import asyncio
import time


class TokenBucket:
    def __init__(self, per_minute: float, burst_s: float = 6.0):
        if per_minute <= 0:
            raise ValueError("rate must be positive")
        self.rate = per_minute / 60.0  # units per second
        self.capacity = max(1.0, self.rate * burst_s)
        self.level = self.capacity
        self.stamp = time.monotonic()
        self._lock = asyncio.Lock()  # FIFO: waiters are served in order

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    async def acquire(self, amount: float = 1.0) -> None:
        async with self._lock:
            need = min(amount, self.capacity)
            self._refill()
            while self.level < need:
                await asyncio.sleep((need - self.level) / self.rate)
                self._refill()
            self.level -= amount


class RateLimits:
    """RPM and TPM together; either may be None (unlimited)."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None):
        self.rpm = TokenBucket(rpm) if rpm else None
        self.tpm = TokenBucket(tpm) if tpm else None

    async def acquire(self, tokens: int) -> None:
        if self.rpm:
            await self.rpm.acquire(1)
        if self.tpm:
            await self.tpm.acquire(tokens)
