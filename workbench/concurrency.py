"""How many requests one endpoint gets at once, found by the program instead of configured by hand.

Servers such as vLLM or llama.cpp queue what they cannot serve at once, so overload shows as latency before it
shows as errors. The limit follows TCP Vegas: with `limit` requests in flight and latency `rtt` against the
lowest latency seen (`min_rtt`), about `limit * (1 - min_rtt / rtt)` of them are waiting in the server's queue.
Fewer than ALPHA waiting: the server has room, grow; more than BETA: shrink. Growth doubles per round trip until
queueing first shows (slow start), then moves by one per round trip. A 429/503 or a dropped connection halves
the limit at once. `max_concurrency` stays a hard ceiling; `adaptive = false` pins the limit to it.
"""
from __future__ import annotations

import asyncio
from collections import deque

ALPHA = 2.0          # requests allowed to wait in the server's queue before we stop growing (at least; see alpha())
BETA = 6.0           # more than this waiting: shrink (at least; see beta())
INITIAL = 16
MIN_RTT_DRIFT = 1.02  # every DRIFT_EVERY samples min_rtt may rise this much (the server's base latency can grow)
DRIFT_EVERY = 500


class AdaptiveLimit:
    """A semaphore whose size moves with the server's latency and overload replies."""

    def __init__(self, ceiling: int, *, adaptive: bool = True, initial: int = INITIAL):
        self.ceiling = max(1, int(ceiling))
        self.adaptive = adaptive
        self.limit = float(self.ceiling if not adaptive else min(initial, self.ceiling))
        self.in_use = 0
        self.min_rtt: float | None = None
        self.slow_start = adaptive
        self.samples = 0
        self.peak = int(self.limit)
        self._waiters: deque[asyncio.Future] = deque()

    def alpha(self) -> float:
        return max(ALPHA, self.limit ** 0.5)

    def beta(self) -> float:
        return max(BETA, 3 * self.limit ** 0.5)

    @property
    def size(self) -> int:
        return max(1, int(self.limit))

    async def acquire(self) -> int:
        """Wait for a slot; returns how many requests are in flight with this one (pass it to `release`)."""
        if self.in_use < self.size and not self._waiters:
            self.in_use += 1
            return self.in_use
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release_slot()      # we were handed a slot as we were cancelled: pass it on
            elif fut in self._waiters:    # (a cancelled waiter may already have been dropped by _release_slot)
                self._waiters.remove(fut)
            raise
        return self.in_use

    def release(self, sent_with: int = 0, *, rtt: float | None = None, overloaded: bool = False) -> None:
        """Give the slot back: `sent_with` as `acquire` returned it, `rtt` of a successful request, or
        `overloaded` for a 429/503/timeout/dropped connection."""
        if self.adaptive:
            if overloaded:
                self._shrink()
            elif rtt is not None:
                self._observe(rtt, sent_with or self.in_use)
        self._release_slot()

    def _release_slot(self) -> None:
        self.in_use -= 1
        while self._waiters and self.in_use < self.size:
            fut = self._waiters.popleft()
            if not fut.done():
                self.in_use += 1
                fut.set_result(None)

    def _observe(self, rtt: float, sent_with: int) -> None:
        self.samples += 1
        if self.min_rtt is None or rtt < self.min_rtt:
            self.min_rtt = max(rtt, 1e-6)
        elif self.samples % DRIFT_EVERY == 0:
            self.min_rtt *= MIN_RTT_DRIFT
        served = sent_with * self.min_rtt / max(rtt, 1e-6)
        queued = sent_with - served
        beta = self.beta()
        if queued > beta:
            self.slow_start = False
            # one step per reply, never below what the server serves plus beta
            self.limit = max(1.0, served + beta, self.limit - 1.0) if self.limit > served + beta else self.limit
        elif queued < self.alpha() and sent_with >= self.limit / 2:   # grow only a limit that is being used
            self.limit = min(float(self.ceiling), self.limit + (1.0 if self.slow_start else 1.0 / self.limit))
        self.peak = max(self.peak, self.size)

    def _shrink(self) -> None:
        self.slow_start = False
        self.limit = max(1.0, self.limit / 2)
