"""Fields of any size in the TUI: Review loads at most 64 KB of a field (by bytes: a NUL inside cannot hide the
rest), `m` draws more up to that, `p` pages the whole sample through $PAGER, the edit dialog never offers a field it
did not load whole."""
from __future__ import annotations


import pytest

from workbench.bigtext import PREVIEW_BYTES, preview_sql, preview_value, stream_field
from workbench.samples import insert_samples
from workbench.store import ensure_dataset, open_store, transaction

from pilotkit import wait_for
from test_app_review import SIZE, app_for, block_text, peek, press, review_ready

HUGE = "start \x00 after-nul " + "é" * (1 << 20) + " \x1b]52;c;cGF5bG9hZA==\x07 the end"


@pytest.fixture
def store(db_path):
    conn = open_store(db_path)
    with transaction(conn):
        did = ensure_dataset(conn, "main")
        first, _ = insert_samples(conn, did, [{"instruction": "short \x00 with nul", "response": HUGE},
                                              {"instruction": "next", "response": "r"}])
    conn.close()
    return {"id": first, "db": db_path}


def test_preview_is_by_bytes_and_sees_past_a_nul(conn):
    row = conn.execute(f"SELECT {preview_sql('?1')}", ("a\x00b",)).fetchone()
    assert preview_value(row[0]) == ("a\x00b", False) and row[1] == 3
    row = conn.execute(f"SELECT {preview_sql('?1')}", (HUGE,)).fetchone()
    text, cut = preview_value(row[0])
    size = len(HUGE.encode())
    assert cut and row[1] == size and HUGE.startswith(text) and len(text.encode()) > PREVIEW_BYTES - 4
    conn.execute("CREATE TEMP TABLE t (x TEXT)")
    conn.execute("INSERT INTO t VALUES (?)", (HUGE,))
    assert "".join(stream_field(conn, "t", "x", 1, chunk=1001)) == HUGE       # chunks cut inside "é": rejoined


async def test_review_shows_64kb_and_pages_the_whole_sample(store, tmp_path, monkeypatch):
    copy = tmp_path / "paged.txt"
    pager = tmp_path / "pager.sh"
    pager.write_text(f'#!/bin/sh\nstat -c %a "$1" > {tmp_path}/mode\ncat "$1" > {copy}\n')
    pager.chmod(0o755)
    monkeypatch.setenv("PAGER", str(pager))
    size = len(HUGE.encode())
    async with app_for(store, sample_id=store["id"]).run_test(size=SIZE) as pilot:
        screen = await review_ready(pilot)
        s = screen.sample
        assert s["instruction"] == "short \x00 with nul" and "instruction" not in s["clipped"]
        assert s["clipped"] == {"response": size} and len(s["response"].encode()) <= PREVIEW_BYTES
        response = screen.body.block("response")
        assert f"more bytes of {size:,} not shown" in block_text(screen, "response")
        for _ in range(4):
            await press(pilot, "m")
        assert response.hidden == size - len(s["response"].encode())
        await press(pilot, "p")
        await wait_for(pilot, lambda: copy.exists() and copy.stat().st_size > size)
        paged = copy.read_text()
        assert (tmp_path / "mode").read_text().strip() == "600"
        assert "===== response (%s bytes) =====" % f"{size:,}" in paged
        assert "start ␀ after-nul " + "é" * (1 << 20) + " ␛]52;c;cGF5bG9hZA==␇ the end" in paged
        assert "\x1b" not in paged and "\x07" not in paged
        # the edit dialog offers what was loaded whole, and says why the rest is not
        await pilot.press("e")
        await wait_for(pilot, lambda: type(pilot.app.screen).__name__ == "EditDialog")
        dialog = pilot.app.screen
        assert "response" not in dialog.fields and "instruction" in dialog.fields
        assert any(f"Response: {size:,} bytes, too long to edit here" in str(lbl.render())
                   for lbl in dialog.query("Label"))
        await pilot.press("escape")
    assert peek(store["db"], "SELECT length(CAST(response AS BLOB)) FROM samples WHERE id = ?",
                (store["id"],))[0][0] == size


async def test_jobs_failures_of_a_20mb_reply_load_only_its_start(db_path, tmp_path):
    """A store from before the reply cap holds a 20 MB raw reply: the Jobs detail and `v` load 64 KB of it."""
    from screens.jobs import FailuresScreen
    from workbench import jobs as J
    from test_jobs_screen import JobsApp, until
    conn = open_store(db_path)
    raw = "{\"choices\": \"" + "z" * (20 << 20) + "\"}"
    with transaction(conn):
        jid = conn.execute("INSERT INTO jobs (kind, params, status, created_at) VALUES ('generate', '{}', 'done', "
                           "'now')").lastrowid
        conn.execute("INSERT INTO job_items (job_id, key, status, error, raw, updated_at) VALUES "
                     "(?, 's:1', 'failed', 'unparseable reply', ?, 'now')", (jid, raw))
    (f,) = J.failures(conn, jid, clip=True)
    assert f["clipped"] == {"raw": len(raw)} and len(f["raw"]) <= PREVIEW_BYTES
    conn.close()
    app = JobsApp(db_path, tmp_path / "config.toml")
    async with app.run_test(size=(140, 45)) as pilot:
        screen = app.screen
        await until(pilot, lambda: screen.loaded.is_set() and screen.view["failures"])
        assert f"{len(raw):,} bytes in all" in "\n".join(str(w.content) for w in screen.query(".failure"))
        await pilot.press("v")
        await until(pilot, lambda: isinstance(app.screen, FailuresScreen))
        full = "\n".join(str(w.content) for w in app.screen.query(".failure"))
        assert len(full) < 10_000 and f"{len(raw):,} bytes in all (p: whole reply in $PAGER)" in full
