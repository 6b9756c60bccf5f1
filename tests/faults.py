"""A fault on the Nth call of a function, for tests of a bulk writer that fails midway."""
from __future__ import annotations

import sqlite3


def fail_on_call(monkeypatch, owner, name: str, n: int) -> None:
    """`owner.name` raises a disk error on its n-th call; the others go through."""
    real, calls = getattr(owner, name), []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == n:
            raise sqlite3.OperationalError("disk I/O error")
        return real(*a, **k)
    monkeypatch.setattr(owner, name, flaky)
