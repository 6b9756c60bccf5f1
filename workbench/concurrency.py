"""How many requests one endpoint gets at once, found by the program instead of configured by hand.

Servers such as vLLM or llama.cpp queue what they cannot serve at once, so overload shows as latency before it
shows as errors. The limit follows TCP Vegas: with `limit` requests in flight and latency `rtt` against the
latency without a queue (`min_rtt`), about `limit * (1 - min_rtt / rtt)` of them wait in the server's queue and
`served = limit * min_rtt / rtt` are being served. Fewer than alpha waiting: the server has room, grow; more than
beta: shrink. Growth doubles per round trip until queueing first shows (slow start), then moves by one per round
trip. A 429/503 or a dropped connection halves the limit at once. `max_concurrency` stays a hard ceiling;
`adaptive = false` pins the limit to it.

Two things make this work for LLM servers, small ones included (measured: benchmarks/bench_pool.py, the small
server case, and benchmarks/real_model_pool.py):
- The queue allowed is at most `served`: a queue as long as what the server serves at once already makes each
  reply wait one service time. Before, it was 6 at least and 3*sqrt(limit), so a 2-slot llama-server settled at
  a limit of 12-17 and every reply waited ~8 service times with no gain in throughput.
- Latency is averaged over about a round of replies, and `min_rtt` starts as the mean latency of the first two
  requests sent, then follows the lowest average: reply lengths make single latencies differ 2-10x, and the
  lowest single latency (what a per-reply Vegas uses) held a 64-slot server with such replies at a limit of 12
  (simulated: tests/test_pool.py drives this class in virtual time).
Latency alone never takes the limit below FLOOR: two short first replies can still make the baseline too low,
which reads as a queue that shrinking does not drain; 429s and errors still halve it to 1.
"""
from __future__ import annotations

import asyncio
from collections import deque

ALPHA = 2.0          # requests allowed to wait in the server's queue before we stop growing (see alpha())
BETA = 6.0           # more than this waiting: shrink (see beta())
FLOOR = 4.0          # latency alone shrinks the limit no lower (see the module's note)
INITIAL = 16
WINDOW = 16          # replies the latency is averaged over, at least (more: as many as the server serves at once)
MIN_RTT_DRIFT = 1.02  # every DRIFT_EVERY samples min_rtt may rise this much (the server's base latency can grow)
DRIFT_EVERY = 500
FIRST = 2            # the first requests sent, whose mean latency is the first no-queue latency
STAGGER = 0.05       # seconds the first FIRST requests go out ahead of the rest


class AdaptiveLimit:
    """A semaphore whose size moves with the server's latency and overload replies."""

    def __init__(self, ceiling: int, *, adaptive: bool = True, initial: int = INITIAL):
        self.ceiling = max(1, int(ceiling))
        self.adaptive = adaptive
        self.limit = float(self.ceiling if not adaptive else min(initial, self.ceiling))
        self.in_use = 0
        self.min_rtt: float | None = None     # the lowest averaged latency: the server's latency without a queue
        self.rtt_avg = 0.0
        self.sent_avg = 0.0
        self.served = self.limit               # requests the server serves at once, as last estimated
        self.first: list[float] = []          # latencies of the first FIRST requests sent
        self._acquired = 0                     # (until the first latency is known: see acquire)
        self._burst_at = 0.0
        self.slow_start = adaptive
        self.samples = 0
        self.peak = int(self.limit)
        self._waiters: deque[asyncio.Future] = deque()

    # The queue allowed grows with sqrt(limit) (the client's own delays look like queueing, more so at a large
    # limit) but never past what the server serves at once: a queue of `served` requests already makes each
    # reply wait one service time, so a 2-slot server gets a limit of 4, not 12.
    def alpha(self, served: float) -> float:
        return min(max(ALPHA, self.limit ** 0.5), served / 2)

    def beta(self, served: float) -> float:
        return min(max(BETA, 3 * self.limit ** 0.5), served)

    @property
    def size(self) -> int:
        return max(1, int(self.limit))

    async def acquire(self) -> int:
        """Wait for a slot; returns how many requests are in flight with this one (pass it to `release`)."""
        if self.adaptive and self.min_rtt is None:
            # the first FIRST requests go out alone for a moment: requests sent at once reach the server in any
            # order (each opens its own connection), and the first ones must not queue behind the burst
            now = asyncio.get_running_loop().time()
            self._burst_at = self._burst_at or now + STAGGER
            self._acquired += 1
            if self._acquired > FIRST and now < self._burst_at:
                await asyncio.sleep(self._burst_at - now)
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
        # averaged over about one round of replies (as many as the server serves at once, WINDOW at least): an
        # LLM's service time differs with each reply's length, and one long reply is not a queue (nor one short
        # reply the server's real latency). Averaging over `limit` replies instead lagged a queued server by rounds
        # and let slow start overshoot further
        w = 1.0 / min(self.samples, max(WINDOW, self.served))    # (a plain mean of the first samples)
        self.rtt_avg += w * (rtt - self.rtt_avg)
        self.sent_avg += w * (sent_with - self.sent_avg)
        if self.min_rtt is None:
            # the latency without a queue: the mean of the first FIRST requests sent, which no earlier request
            # could queue behind (the first replies to come back are the shortest ones, not the first sent);
            # if those failed, the average so far
            if sent_with <= FIRST:
                self.first.append(rtt)
            if len(self.first) < FIRST and self.samples < 2 * INITIAL:
                if self.slow_start and sent_with >= self.limit / 2:
                    self.limit = min(float(self.ceiling), self.limit + 1.0)
                    self.peak = max(self.peak, self.size)
                return
            self.min_rtt = sum(self.first) / len(self.first) if self.first else self.rtt_avg
        elif self.rtt_avg < self.min_rtt and self.samples > max(WINDOW, self.limit):   # (past the first round)
            self.min_rtt = max(self.rtt_avg, 1e-6)
        elif self.samples % DRIFT_EVERY == 0:
            self.min_rtt *= MIN_RTT_DRIFT
        served = self.served = self.sent_avg * self.min_rtt / max(self.rtt_avg, 1e-6)
        queued = self.sent_avg - served
        beta = self.beta(served)
        if queued > beta:
            self.slow_start = False
            # one step per reply, never below what the server serves plus beta, nor (by latency) below FLOOR
            if self.limit > served + beta:
                self.limit = max(min(FLOOR, self.limit), served + beta, self.limit - 1.0)
        elif queued < self.alpha(served) and sent_with >= self.limit / 2:   # grow only a limit that is being used
            self.limit = min(float(self.ceiling), self.limit + (1.0 if self.slow_start else 1.0 / self.limit))
        self.peak = max(self.peak, self.size)

    def _shrink(self) -> None:
        self.slow_start = False
        self.limit = max(1.0, self.limit / 2)
