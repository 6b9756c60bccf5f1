"""The Duplicates screen's scan runs beside the store runner (the real app, Pilot): while a dedup is in progress
the runner still serves the screen's other reads, the status line shows the scan's progress, and leaving the
screen stops the scan. Event-driven: the scan is held at its first progress point until the test lets it go."""
from __future__ import annotations

import threading

import pytest

from pilotkit import wait_for
from screens.duplicates import DuplicatesScreen
from workbench import dedup, store
from workbench.app import WorkbenchApp
from workbench.samples import insert_samples


@pytest.fixture
def dup_store(db_path):
    conn = store.open_store(db_path)
    with store.transaction(conn):
        did = store.ensure_dataset(conn, "d")
        insert_samples(conn, did, [
            {"instruction": "List five fruits that are high in vitamin C."},
            {"instruction": "List five fruits that are high in vitamin C"},
            {"instruction": "Write a limerick about a cat who learns to code."},
            {"instruction": "Write a limerick about a cat who learns to code!!"},
            {"instruction": "Explain how tides work."},
        ])
    yield conn
    conn.close()


class HeldScan:
    """Wraps dedup.find_clusters: the real scan, held at its first progress report until `release` is set."""

    def __init__(self, monkeypatch):
        self.entered, self.release, self.finished = threading.Event(), threading.Event(), threading.Event()
        self.threads: list[str] = []
        self.outcome: dict = {}
        real = dedup.find_clusters

        def held(conn, *args, progress=None, **kw):
            self.threads.append(threading.current_thread().name)

            def hold(phase, done, total):
                progress(phase, done, total)          # the screen's report: notes progress, raises if stopped
                if not self.entered.is_set():
                    self.entered.set()
                    self.release.wait(120)            # a guard only: the test sets it
            try:
                self.outcome["clusters"] = real(conn, *args, progress=hold, **kw)
                return self.outcome["clusters"]
            except BaseException as e:
                self.outcome["error"] = e
                raise
            finally:
                self.finished.set()

        monkeypatch.setattr(dedup, "find_clusters", held)


async def test_the_store_runner_serves_reads_while_a_dedup_runs(dup_store, db_path, monkeypatch):
    scan = HeldScan(monkeypatch)
    app = WorkbenchApp(db=db_path)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: type(app.screen).__name__ == "DatasetsScreen")
        screen = DuplicatesScreen(dataset="d", threshold=0.85)
        app.push_screen(screen)
        await wait_for(pilot, scan.entered.is_set)
        # the dedup is in progress (held inside its read phase); a store read on the screen's runner is served
        count = await screen.runner.run(lambda conn: conn.execute("SELECT count(*) FROM samples").fetchone()[0])
        assert count == 5
        assert not scan.finished.is_set() and screen.scanning and not screen.loaded
        assert not any(name.startswith("store") for name in scan.threads)      # not the runner's thread
        await wait_for(pilot, lambda: "reading rows: 5" in str(screen.query_one("#status").render()))
        await pilot.press("j")                                                   # keys still handled
        scan.release.set()
        await wait_for(pilot, lambda: screen.loaded and screen.cluster is not None)
        assert screen.clusters == [[1, 2], [3, 4]] == scan.outcome["clusters"]
        assert not screen.scanning
        assert "cluster 1 of 2" in str(screen.query_one("#status").render())


async def test_leaving_the_screen_stops_its_dedup(dup_store, db_path, monkeypatch):
    scan = HeldScan(monkeypatch)
    app = WorkbenchApp(db=db_path)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: type(app.screen).__name__ == "DatasetsScreen")
        app.push_screen(DuplicatesScreen(dataset="d", threshold=0.85))
        await wait_for(pilot, scan.entered.is_set)
        await pilot.press("escape")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "DatasetsScreen")
        scan.release.set()
        await wait_for(pilot, scan.finished.is_set)
        assert isinstance(scan.outcome.get("error"), dedup.Cancelled)


async def test_a_new_threshold_stops_the_running_scan_and_starts_another(dup_store, db_path, monkeypatch):
    scan = HeldScan(monkeypatch)
    app = WorkbenchApp(db=db_path)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: type(app.screen).__name__ == "DatasetsScreen")
        screen = DuplicatesScreen(dataset="d", threshold=0.85)
        app.push_screen(screen)
        await wait_for(pilot, scan.entered.is_set)
        await pilot.press("plus")                                   # stricter: a new scan, the held one stops
        await wait_for(pilot, lambda: screen.loaded and screen.threshold == 0.9)
        assert len(scan.threads) == 2
        scan.release.set()
        await wait_for(pilot, lambda: isinstance(scan.outcome.get("error"), dedup.Cancelled))
        assert screen.clusters == [[1, 2], [3, 4]]
