"""The SQLite store: one file per project, WAL, versioned schema with forward migrations.

Every module opens the store through `open_store()`; nothing else creates tables.
"""
from __future__ import annotations

import os
import re
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

import platformdirs

from . import bulk_recovery, busy, import_recovery
from .fileperms import create_private, private_dir
from .short_tx import ShortTransactions

APP_NAME = "curation-workbench"
BUSY_TIMEOUT_MS = 30_000
PAGE_SIZE = 16384  # for new stores, see connect()
WAL_AUTOCHECKPOINT = 1000  # pages (SQLite's default); bulk imports pause it, see importer.import_file

STATUSES = ("pending", "accepted", "rejected")

# A read over every dataset skips the samples of a dataset being deleted (its datasets row goes first, its rows in
# chunks after: workbench/bulk_delete.py). `+`: never the reason to walk the dataset_id index.
IN_A_DATASET = "+dataset_id IN (SELECT id FROM datasets)"

# --- maintained counts for the Balance histograms (migration 2 -> 3) --------------------------
# A GROUP BY over a million rows costs ~50 ms per histogram even indexed, so the histograms read
# `sample_stats`: counts per (dataset, status, dimension, bucket). Rows up to meta 'stats_upto' are counted
# there; newer rows are the "tail" that `stats.fold()` adds in chunks (like fts_sync), so bulk inserts pay
# nothing. Triggers keep the counted rows right when they are updated or deleted (migration 4: a delete also
# lowers the watermark, so an id reused after deleting the top rows is counted as tail).
# The bucket edges are frozen by this migration: changing them needs a new migration rebuilding sample_stats.
STATS_LENGTH_EDGES = (0, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
STATS_DIMS = ("task_type", "domain", "difficulty", "instruction_len", "response_len", "score")


def stats_bucket_sql(dim: str, row: str = "") -> str:
    """SQL for the bucket key (TEXT) of `dim`; `row` is '' for a plain query or 'new.'/'old.' in a trigger."""
    col = row + dim
    if dim in ("instruction_len", "response_len"):
        whens = " ".join(f"WHEN {col} < {hi} THEN {lo}"
                         for lo, hi in zip(STATS_LENGTH_EDGES, STATS_LENGTH_EDGES[1:]))
        return f"CASE {whens} ELSE {STATS_LENGTH_EDGES[-1]} END"
    if dim == "score":
        return f"coalesce(CAST({col} AS INTEGER), '')"   # [n, n+1); '' = not judged
    return f"coalesce({col}, '')"


def _stats_upsert(row: str, sign: int) -> str:
    values = ", ".join(f"('{d}', {stats_bucket_sql(d, row)})" for d in STATS_DIMS)
    return (f"INSERT INTO sample_stats (dataset_id, status, dim, bucket, n) "
            f"SELECT {row}dataset_id, {row}status, column1, column2, {sign} FROM (VALUES {values}) WHERE true "
            f"ON CONFLICT DO UPDATE SET n = n + excluded.n;")


_STATS_COUNTED = "(SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'stats_upto')"
_STATS_CHANGED = " OR ".join(f"old.{c} IS NOT new.{c}" for c in ("dataset_id", "status") + STATS_DIMS)

_STATS_MIGRATION = f"""
    CREATE TABLE sample_stats (
        dataset_id INTEGER NOT NULL,
        status TEXT NOT NULL,
        dim TEXT NOT NULL,
        bucket TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (dataset_id, status, dim, bucket)
    ) WITHOUT ROWID;
    CREATE TRIGGER sample_stats_insert AFTER INSERT ON samples WHEN new.id <= {_STATS_COUNTED}
    BEGIN {_stats_upsert("new.", 1)} END;
    CREATE TRIGGER sample_stats_delete AFTER DELETE ON samples WHEN old.id <= {_STATS_COUNTED}
    BEGIN {_stats_upsert("old.", -1)} END;
    CREATE TRIGGER sample_stats_update AFTER UPDATE ON samples
    WHEN old.id <= {_STATS_COUNTED} AND ({_STATS_CHANGED})
    BEGIN {_stats_upsert("old.", -1)} {_stats_upsert("new.", 1)} END;
    -- keyset pagination for Browse: each sort order seeks within a dataset (see workbench/browse.py)
    CREATE INDEX samples_dataset ON samples(dataset_id);
    CREATE INDEX samples_dataset_score ON samples(dataset_id, score);
    CREATE INDEX samples_dataset_length ON samples(dataset_id, instruction_len + response_len);
"""

# --- one score per rubric (migration 7 -> 8, branch judge-score) ------------------------------------------
# `content_hash` is the sample's hash when it was scored: an edit sets `stale` (hash differs), and undoing the
# edit clears it again. Old stores are filled from their judgments (judge 1-10 with its dimensions, curate 1-5)
# and preference pairs' lineage; a score whose sample was edited after it is stale (hash unknown).
# samples.score is emptied: nothing reads it any more.
_SCORES_MIGRATION = """
    CREATE TABLE sample_scores (
        sample_id INTEGER NOT NULL,
        rubric TEXT NOT NULL,                      -- judge, judge.alignment, curate, preference.chosen, ...
        score REAL NOT NULL,
        scale_min REAL NOT NULL,
        scale_max REAL NOT NULL,
        judge TEXT,                                -- the model (or endpoint) that scored
        template_version TEXT,
        job_id INTEGER,
        content_hash INTEGER,                      -- the sample's content_hash when scored
        stale INTEGER NOT NULL DEFAULT 0,          -- 1: the text changed since (excluded from score filters)
        created_at TEXT NOT NULL,
        PRIMARY KEY (sample_id, rubric)
    ) WITHOUT ROWID;
    -- score filters and Browse's score sort (stale scores are skipped in the index; sample_id follows score)
    CREATE INDEX sample_scores_rubric ON sample_scores(rubric, stale, score);
    -- agreement reads the curator's decisions (accept/reject) without scanning every clean/dedup row
    CREATE INDEX decisions_action ON decisions(action, sample_id);
    INSERT OR REPLACE INTO sample_scores (sample_id, rubric, score, scale_min, scale_max, judge, template_version,
                                          job_id, content_hash, stale, created_at)
    SELECT j.sample_id, j.rubric, j.overall, 1, CASE j.rubric WHEN 'judge' THEN 10 ELSE 5 END, j.judge,
           j.rubric_version, j.job_id, NULL, 0, j.created_at
    FROM judgments j JOIN samples s ON s.id = j.sample_id
    WHERE j.candidate_id IS NULL AND j.overall IS NOT NULL AND j.rubric IN ('judge', 'curate') ORDER BY j.id;
    INSERT OR REPLACE INTO sample_scores (sample_id, rubric, score, scale_min, scale_max, judge, template_version,
                                          job_id, content_hash, stale, created_at)
    SELECT j.sample_id, 'judge.' || e.key, e.value, 1, 10, j.judge, j.rubric_version, j.job_id, NULL, 0, j.created_at
    FROM judgments j JOIN samples s ON s.id = j.sample_id, json_each(j.scores) e
    WHERE j.candidate_id IS NULL AND j.rubric = 'judge' AND json_valid(j.scores) AND e.type = 'integer'
    ORDER BY j.id;
    INSERT OR REPLACE INTO sample_scores (sample_id, rubric, score, scale_min, scale_max, judge, template_version,
                                          job_id, content_hash, stale, created_at)
    SELECT s.id, 'preference.' || side.value, json_extract(s.origin, '$.' || side.value || '.score'), 1,
           CASE json_extract(s.origin, '$.rubric') WHEN 'judge' THEN 10 ELSE 5 END,
           json_extract(s.origin, '$.judge'), json_extract(s.origin, '$.template_version'), s.job_id, NULL, 0,
           s.created_at
    FROM samples s, json_each('["chosen", "rejected"]') side
    WHERE s.job_id IS NOT NULL AND json_valid(s.origin) AND json_extract(s.origin, '$.task') = 'preference'
      AND json_type(s.origin, '$.' || side.value || '.score') IN ('integer', 'real');
    UPDATE sample_scores SET content_hash = (SELECT s.content_hash FROM samples s WHERE s.id = sample_id);
    UPDATE sample_scores SET stale = 1, content_hash = NULL WHERE EXISTS (
        SELECT 1 FROM decisions d WHERE d.sample_id = sample_scores.sample_id
        AND d.action IN ('edit', 'normalize') AND d.created_at > sample_scores.created_at);
    UPDATE samples SET score = NULL WHERE score IS NOT NULL;

    -- maintained counts for Balance's score histograms: fresh scores per (dataset, status, rubric, whole-number
    -- bucket), kept right by triggers (a score written, replaced, made stale; a sample's status or dataset
    -- changed; a sample deleted). Scores are written with an upsert (scores.record), never INSERT OR REPLACE,
    -- whose implicit delete would fire no trigger.
    CREATE TABLE score_stats (
        dataset_id INTEGER NOT NULL,
        status TEXT NOT NULL,
        rubric TEXT NOT NULL,
        bucket INTEGER NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (rubric, dataset_id, status, bucket)
    ) WITHOUT ROWID;
    -- the rubrics scored in each dataset, with their scale (for the "rubrics present" of filters and Balance)
    CREATE TABLE score_rubrics (
        dataset_id INTEGER NOT NULL,
        rubric TEXT NOT NULL,
        scale_min REAL NOT NULL,
        scale_max REAL NOT NULL,
        PRIMARY KEY (dataset_id, rubric)
    ) WITHOUT ROWID;
    INSERT INTO score_stats (dataset_id, status, rubric, bucket, n)
    SELECT s.dataset_id, s.status, sc.rubric, CAST(sc.score AS INTEGER), count(*) FROM sample_scores sc
    JOIN samples s ON s.id = sc.sample_id WHERE sc.stale = 0 GROUP BY 1, 2, 3, 4;
    INSERT INTO score_rubrics (dataset_id, rubric, scale_min, scale_max)
    SELECT s.dataset_id, sc.rubric, min(sc.scale_min), max(sc.scale_max) FROM sample_scores sc
    JOIN samples s ON s.id = sc.sample_id GROUP BY 1, 2;
    CREATE TRIGGER score_stats_insert AFTER INSERT ON sample_scores
    BEGIN
        INSERT INTO score_stats (dataset_id, status, rubric, bucket, n)
        SELECT dataset_id, status, new.rubric, CAST(new.score AS INTEGER), 1 FROM samples
        WHERE id = new.sample_id AND new.stale = 0 ON CONFLICT DO UPDATE SET n = n + 1;
        INSERT INTO score_rubrics (dataset_id, rubric, scale_min, scale_max)
        SELECT dataset_id, new.rubric, new.scale_min, new.scale_max FROM samples WHERE id = new.sample_id
        ON CONFLICT DO UPDATE SET scale_min = min(scale_min, excluded.scale_min),
                                  scale_max = max(scale_max, excluded.scale_max);
    END;
    CREATE TRIGGER score_stats_update AFTER UPDATE ON sample_scores
    WHEN old.stale IS NOT new.stale OR old.score IS NOT new.score OR old.rubric IS NOT new.rubric
      OR old.sample_id IS NOT new.sample_id OR old.scale_min IS NOT new.scale_min OR old.scale_max IS NOT new.scale_max
    BEGIN
        UPDATE score_stats SET n = n - 1 WHERE old.stale = 0 AND rubric = old.rubric
            AND bucket = CAST(old.score AS INTEGER)
            AND dataset_id = (SELECT dataset_id FROM samples WHERE id = old.sample_id)
            AND status = (SELECT status FROM samples WHERE id = old.sample_id);
        INSERT INTO score_stats (dataset_id, status, rubric, bucket, n)
        SELECT dataset_id, status, new.rubric, CAST(new.score AS INTEGER), 1 FROM samples
        WHERE id = new.sample_id AND new.stale = 0 ON CONFLICT DO UPDATE SET n = n + 1;
        INSERT INTO score_rubrics (dataset_id, rubric, scale_min, scale_max)
        SELECT dataset_id, new.rubric, new.scale_min, new.scale_max FROM samples WHERE id = new.sample_id
        ON CONFLICT DO UPDATE SET scale_min = min(scale_min, excluded.scale_min),
                                  scale_max = max(scale_max, excluded.scale_max);
    END;
    CREATE TRIGGER score_stats_delete AFTER DELETE ON sample_scores
    BEGIN
        UPDATE score_stats SET n = n - 1 WHERE old.stale = 0 AND rubric = old.rubric
            AND bucket = CAST(old.score AS INTEGER)
            AND dataset_id = (SELECT dataset_id FROM samples WHERE id = old.sample_id)
            AND status = (SELECT status FROM samples WHERE id = old.sample_id);
    END;
    CREATE TRIGGER score_stats_sample_update AFTER UPDATE OF status, dataset_id ON samples
    WHEN old.status IS NOT new.status OR old.dataset_id IS NOT new.dataset_id
    BEGIN
        UPDATE score_stats SET n = n - 1 WHERE dataset_id = old.dataset_id AND status = old.status
            AND (rubric, bucket) IN (SELECT rubric, CAST(score AS INTEGER) FROM sample_scores
                                     WHERE sample_id = old.id AND stale = 0);
        INSERT INTO score_stats (dataset_id, status, rubric, bucket, n)
        SELECT new.dataset_id, new.status, rubric, CAST(score AS INTEGER), 1 FROM sample_scores
        WHERE sample_id = new.id AND stale = 0 ON CONFLICT DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER score_stats_sample_delete AFTER DELETE ON samples
    BEGIN
        UPDATE score_stats SET n = n - 1 WHERE dataset_id = old.dataset_id AND status = old.status
            AND (rubric, bucket) IN (SELECT rubric, CAST(score AS INTEGER) FROM sample_scores
                                     WHERE sample_id = old.id AND stale = 0);
        DELETE FROM sample_scores WHERE sample_id = old.id;
    END;
"""

# Each entry migrates the schema from version i to i+1. Never edit a shipped entry: append a new one.
MIGRATIONS: list[str] = [
    # 0 -> 1: the core tables
    """
    CREATE TABLE datasets (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL DEFAULT 'sft',          -- sft | preference | prompts | text | mixed
        created_at TEXT NOT NULL,
        description TEXT
    );
    -- one row per file imported (a dataset may be fed by several files)
    CREATE TABLE imports (
        id INTEGER PRIMARY KEY,
        dataset_id INTEGER NOT NULL REFERENCES datasets(id),
        file TEXT NOT NULL,
        format TEXT NOT NULL,
        mapping TEXT,                               -- JSON: target field -> source column
        rows INTEGER NOT NULL DEFAULT 0,
        skipped INTEGER NOT NULL DEFAULT 0,
        imported_at TEXT NOT NULL
    );
    CREATE TABLE samples (
        id INTEGER PRIMARY KEY,
        dataset_id INTEGER NOT NULL REFERENCES datasets(id),
        instruction TEXT NOT NULL DEFAULT '',
        input TEXT NOT NULL DEFAULT '',            -- context
        response TEXT NOT NULL DEFAULT '',         -- for preference rows: the chosen reply
        rejected TEXT,                             -- preference rows only
        system TEXT NOT NULL DEFAULT '',
        messages TEXT,                             -- JSON list of {role, content}: the whole conversation
                                                   -- (sft) or the prompt turns (preference), NULL if single-turn
        task_type TEXT,
        domain TEXT,
        difficulty TEXT,
        language TEXT,
        metadata TEXT,                             -- JSON object: every source column we did not map
        content_hash INTEGER NOT NULL,             -- 64-bit hash of the normalized text
        dup_of INTEGER,                            -- id of the first sample with the same content_hash
        import_id INTEGER REFERENCES imports(id),
        source_line INTEGER,                       -- 1-based line (JSONL/TXT) or row (JSON/CSV/Parquet) in the import file
        parent_id INTEGER,                         -- lineage: the sample this one was made from
        job_id INTEGER,                            -- lineage: the job that made it
        origin TEXT,                               -- JSON: task, model, endpoint, template version, params
        status TEXT NOT NULL DEFAULT 'pending',    -- cache of the latest decision
        score REAL,                                -- cache of the latest overall judge score
        instruction_len INTEGER NOT NULL DEFAULT 0,
        response_len INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX samples_dataset_status ON samples(dataset_id, status, id);
    CREATE INDEX samples_hash ON samples(content_hash);
    CREATE INDEX samples_parent ON samples(parent_id);
    CREATE INDEX samples_task_type ON samples(dataset_id, task_type);
    CREATE INDEX samples_domain ON samples(dataset_id, domain);
    CREATE INDEX samples_difficulty ON samples(dataset_id, difficulty);

    CREATE TABLE judgments (
        id INTEGER PRIMARY KEY,
        sample_id INTEGER NOT NULL REFERENCES samples(id),
        candidate_id INTEGER,                      -- set when a candidate (not the sample) was judged
        judge TEXT NOT NULL,                       -- endpoint/model that judged
        rubric TEXT NOT NULL,                      -- template name
        rubric_version TEXT NOT NULL,
        scores TEXT,                               -- JSON: dimension -> score
        overall REAL,
        rationale TEXT,
        raw TEXT,                                  -- the judge's reply, verbatim
        job_id INTEGER,
        created_at TEXT NOT NULL
    );
    CREATE INDEX judgments_sample ON judgments(sample_id);

    CREATE TABLE candidates (
        id INTEGER PRIMARY KEY,
        sample_id INTEGER NOT NULL REFERENCES samples(id),
        model TEXT NOT NULL,
        endpoint TEXT,
        response TEXT NOT NULL,
        job_id INTEGER,
        created_at TEXT NOT NULL
    );
    CREATE INDEX candidates_sample ON candidates(sample_id);

    -- append-only log of every review action; undo is a new row, never a delete
    CREATE TABLE decisions (
        id INTEGER PRIMARY KEY,
        sample_id INTEGER NOT NULL REFERENCES samples(id),
        action TEXT NOT NULL,                      -- accept | reject | skip | edit | undo | filter | dedup | ...
        before TEXT,                               -- JSON of the fields the action changed, as they were
        after TEXT,                                -- JSON of those fields afterwards
        reason TEXT,
        undoes INTEGER,                            -- for action 'undo': the decision it reverts
        session TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX decisions_sample ON decisions(sample_id, id);
    CREATE INDEX decisions_session ON decisions(session, id);

    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        params TEXT NOT NULL,                      -- JSON
        status TEXT NOT NULL DEFAULT 'queued',     -- queued | running | paused | cancelled | done | failed
        dataset_id INTEGER,
        into_dataset_id INTEGER,
        total INTEGER NOT NULL DEFAULT 0,
        done INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0,
        kept INTEGER NOT NULL DEFAULT 0,
        dropped INTEGER NOT NULL DEFAULT 0,
        drop_reasons TEXT,                          -- JSON: rule -> count
        tokens_in INTEGER NOT NULL DEFAULT 0,
        tokens_out INTEGER NOT NULL DEFAULT 0,
        cost REAL NOT NULL DEFAULT 0,
        cache_hits INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_expires REAL,
        heartbeat_at REAL,
        error TEXT,
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT
    );
    CREATE TABLE job_items (
        id INTEGER PRIMARY KEY,
        job_id INTEGER NOT NULL REFERENCES jobs(id),
        key TEXT NOT NULL,                         -- unique within the job: what the item is (sample id, round, ...)
        sample_id INTEGER,
        status TEXT NOT NULL DEFAULT 'pending',    -- pending | done | dropped | failed
        attempts INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        raw TEXT,                                  -- raw reply kept for failed/dropped items
        result TEXT,                               -- JSON summary of what the item wrote
        updated_at TEXT,
        UNIQUE(job_id, key)
    );
    CREATE INDEX job_items_status ON job_items(job_id, status);

    CREATE TABLE llm_cache (
        key TEXT PRIMARY KEY,                      -- sha256 of (model, messages, params)
        model TEXT,
        response TEXT NOT NULL,                    -- JSON of the completion we use (text, finish_reason)
        usage TEXT,
        created_at TEXT NOT NULL
    );

    CREATE TABLE snapshots (
        id INTEGER PRIMARY KEY,
        name TEXT,
        file TEXT NOT NULL,
        format TEXT NOT NULL,
        filters TEXT,                              -- JSON
        counts TEXT,                               -- JSON
        sha256 TEXT NOT NULL,
        manifest TEXT NOT NULL,                    -- JSON, also written beside the file
        created_at TEXT NOT NULL
    );
    -- which samples (and which version of their text) went into each snapshot, for `workbench diff`
    CREATE TABLE snapshot_items (
        snapshot_id INTEGER NOT NULL REFERENCES snapshots(id),
        sample_id INTEGER NOT NULL,
        content_hash INTEGER NOT NULL,
        PRIMARY KEY (snapshot_id, sample_id)
    ) WITHOUT ROWID;

    -- named, non-destructive selections (balanced sampling, Deita selection)
    CREATE TABLE selections (
        name TEXT NOT NULL,
        sample_id INTEGER NOT NULL,
        PRIMARY KEY (name, sample_id)
    ) WITHOUT ROWID;

    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);

    -- full-text search; external content, filled by fts_sync() after bulk loads rather than by triggers
    -- (triggers make every batched commit ~8x slower)
    CREATE VIRTUAL TABLE samples_fts USING fts5(
        instruction, input, response, content='samples', content_rowid='id'
    );
    """,
    # 1 -> 2: job progress across restarts (items/s, ETA, request counts) and per-item payloads for dynamic tasks
    """
    ALTER TABLE jobs ADD COLUMN rate REAL;                           -- items/s over the worker's recent window
    ALTER TABLE jobs ADD COLUMN run_seconds REAL NOT NULL DEFAULT 0; -- time spent running, summed over workers
    ALTER TABLE jobs ADD COLUMN requests INTEGER NOT NULL DEFAULT 0; -- HTTP requests sent (cache hits excluded)
    ALTER TABLE jobs ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE job_items ADD COLUMN payload TEXT;                  -- JSON the task attached to the item
    CREATE INDEX jobs_status ON jobs(status, id);
    """,
    # 2 -> 3: maintained counts for the Balance histograms (sample_stats), indexes for Browse's keyset sorts
    _STATS_MIGRATION,
    # 3 -> 4: no insert trigger on samples. Evaluating it cost ~14 us a row (a third of a bulk import's insert
    # time) to cover only ids reused after the top rows are deleted; instead a delete lowers the watermark below
    # the reused ids, so fold() counts them like any new row.
    f"""
    DROP TRIGGER sample_stats_insert;
    DROP TRIGGER sample_stats_delete;
    CREATE TRIGGER sample_stats_delete AFTER DELETE ON samples WHEN old.id <= {_STATS_COUNTED}
    BEGIN {_stats_upsert("old.", -1)}
        UPDATE meta SET value = (SELECT coalesce(max(id), 0) FROM samples)
        WHERE key = 'stats_upto' AND CAST(value AS INTEGER) > (SELECT coalesce(max(id), 0) FROM samples);
    END;
    """,
    # 4 -> 5: the search index keeps which columns a word is in, not its positions (detail=column): measured on
    # 100k rows, 38 % faster to build and 45 % smaller. Searches are all-words queries (fts_query), which need no
    # positions. The index is rebuilt by fts_sync (in the background after an import, or when Review/Browse open).
    """
    DROP TABLE samples_fts;
    CREATE VIRTUAL TABLE samples_fts USING fts5(
        instruction, input, response, content='samples', content_rowid='id', detail=column
    );
    DELETE FROM meta WHERE key = 'fts_upto';
    """,
    # 5 -> 6: the search index merges its segments only when 16 (not 4) pile up at a level. fts_sync commits every
    # 2,000 rows so writers never wait long; with the default each small commit set off merge work. Measured on
    # 200k rows: 11.6 s to build instead of 20.5 s; all-words queries stayed at 1-5 ms.
    """
    INSERT INTO samples_fts (samples_fts, rank) VALUES ('automerge', 16);
    """,
    # 6 -> 7 (branch export): provenance an export can list - each source file's sha256, and a licence (SPDX)
    # recorded per import and per dataset (`import --license`)
    """
    ALTER TABLE imports ADD COLUMN sha256 TEXT;
    ALTER TABLE imports ADD COLUMN license TEXT;
    ALTER TABLE datasets ADD COLUMN license TEXT;
    """,
    # (branch judge-score) 7 -> 8: one latest score per sample and rubric, with its scale (samples.score was one
    # column every rubric overwrote: a judge 1-10 replaced a curate 1-5). See workbench/scores.py.
    _SCORES_MIGRATION,
    # 8 -> 9 (branch import): importing the same bytes (sha256) into a dataset again is refused unless --append;
    # the file's size says when the sha256 must be taken before importing rather than beside it
    """
    ALTER TABLE imports ADD COLUMN bytes INTEGER;
    CREATE INDEX imports_dataset_sha ON imports(dataset_id, sha256);
    """,
    # 9 -> 10 (branch methods): recipes, a sequence of steps; each step becomes a job once its input is complete
    # (`job_id` is set in the same transaction as the job is created, so two workers never queue a step twice)
    """
    CREATE TABLE recipes (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        file TEXT,
        vars TEXT,                                 -- JSON: the variables the steps were resolved with
        status TEXT NOT NULL DEFAULT 'running',    -- running | done | failed
        error TEXT,
        created_at TEXT NOT NULL,
        finished_at TEXT
    );
    CREATE TABLE recipe_steps (
        recipe_id INTEGER NOT NULL REFERENCES recipes(id),
        idx INTEGER NOT NULL,
        name TEXT NOT NULL,
        task TEXT NOT NULL,
        spec TEXT NOT NULL,                        -- JSON: input, into, endpoint, pool, judge, params, filter
        job_id INTEGER,
        PRIMARY KEY (recipe_id, idx)
    );
    CREATE INDEX recipe_steps_job ON recipe_steps(job_id);
    """,
    # (branch scale) 10 -> 11: per-endpoint figures of a running job: limit found, replies, errors, latency (JSON list)
    """
    ALTER TABLE jobs ADD COLUMN endpoint_stats TEXT;
    """,
    # (branch batch) 11 -> 12: jobs run through a provider's Batch API (`run TASK --batch`, workbench/batch.py).
    # One row per round (a multi-step task needs one round per step); every remote id is stored as soon as it
    # is known, so a restarted worker resumes the step it was in and never submits a round twice.
    """
    CREATE TABLE job_batches (
        id INTEGER PRIMARY KEY,
        job_id INTEGER NOT NULL REFERENCES jobs(id),
        round INTEGER NOT NULL,
        state TEXT NOT NULL,          -- prepared | uploaded | submitted | downloaded | ingested | abandoned
        requests INTEGER NOT NULL,
        input_file_id TEXT,
        batch_id TEXT,
        remote_status TEXT,           -- the provider's: validating, in_progress, ..., completed, expired, ...
        counts TEXT,                  -- JSON {total, completed, failed} as last polled
        output_file_id TEXT,
        error_file_id TEXT,
        error TEXT,
        polls INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (job_id, round)
    );
    CREATE TABLE batch_requests (
        batch INTEGER NOT NULL REFERENCES job_batches(id),
        custom_id TEXT NOT NULL,      -- the request's llm_cache key
        body TEXT NOT NULL,           -- JSON request body (no key: the key is only ever an HTTP header)
        PRIMARY KEY (batch, custom_id)
    ) WITHOUT ROWID;
    CREATE TABLE batch_replies (
        batch INTEGER NOT NULL REFERENCES job_batches(id),
        custom_id TEXT NOT NULL,
        reply TEXT,                   -- JSON {text, model, finish_reason, prompt_tokens, completion_tokens}
        error TEXT,                   -- why the request has no usable reply (then reply is NULL)
        raw TEXT,                     -- the line(s) of the output/error file, as received (redacted)
        PRIMARY KEY (batch, custom_id)
    ) WITHOUT ROWID;
    """,
    # (branch import-speed) 12 -> 13: an import commits in many short transactions; until its last one it is
    # 'running' (its process id recorded), and an import whose process died is removed on the next open
    # (workbench/import_recovery.py). first_id bounds the scan for its rows; made_dataset: remove the dataset too.
    """
    ALTER TABLE imports ADD COLUMN state TEXT;                 -- NULL: complete; 'running'
    ALTER TABLE imports ADD COLUMN pid INTEGER;
    ALTER TABLE imports ADD COLUMN first_id INTEGER;
    ALTER TABLE imports ADD COLUMN made_dataset INTEGER NOT NULL DEFAULT 0;
    """,
    # (branch batch-rest) 13 -> 14: a batch line that failed for a reason worth asking again (429, 5xx, a
    # timeout) is sent again in a follow-up batch, up to the endpoint's max_retries (workbench/batch.py)
    """
    ALTER TABLE batch_replies ADD COLUMN retryable INTEGER NOT NULL DEFAULT 0;
    """,
    # (branch export-lock) 14 -> 15: long writers commit in short transactions. An export writes its
    # snapshot_items under a reserved snapshot id (snapshot_writes) before one short transaction publishes the
    # snapshots row; a keep or a shard import applies its run in chunks while bulk_runs marks it unfinished. A row
    # whose process died is undone by the next open (workbench/bulk_recovery.py; a shard import's: shard_update.py).
    # snapshot_items gets the sample index keep and the shard import look the latest export of a sample up by.
    """
    CREATE TABLE snapshot_writes (
        snapshot_id INTEGER PRIMARY KEY,
        pid INTEGER,
        temp TEXT,                    -- the export's temp file or directory, removed with the items
        started_at TEXT NOT NULL
    );
    CREATE TABLE bulk_runs (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,           -- keep | update
        run TEXT,                     -- the run id its decisions carry (filter-N, update-N), once it has one
        pid INTEGER,
        info TEXT,                    -- JSON: what undoing it needs besides its decisions (an update's scores)
        started_at TEXT NOT NULL
    );
    -- the scores a shard import replaced (sample_scores' columns), so an unfinished one can put them back
    CREATE TABLE bulk_run_scores (
        bulk_id INTEGER NOT NULL,
        sample_id INTEGER NOT NULL,
        rubric TEXT NOT NULL,
        score REAL NOT NULL, scale_min REAL NOT NULL, scale_max REAL NOT NULL, judge TEXT, template_version TEXT,
        job_id INTEGER, content_hash INTEGER, stale INTEGER NOT NULL, created_at TEXT NOT NULL,
        PRIMARY KEY (bulk_id, sample_id, rubric)
    ) WITHOUT ROWID;
    CREATE INDEX snapshot_items_sample ON snapshot_items(sample_id);
    """,
    # (branch import-fast) 15 -> 16: two indexes nothing reads, which every inserted row paid for (~10 % of a bulk
    # import's insert time): samples.score has not been written since 7 -> 8 (scores live in sample_scores), and no
    # query looks samples up by parent_id (lineage walks up from a sample by its id). Dropping them rewrites nothing.
    """
    DROP INDEX samples_dataset_score;
    DROP INDEX samples_parent;
    """,
    # (branch bulk-delete) 16 -> 17: `dataset delete` in short transactions (workbench/bulk_delete.py). Its first one
    # removes the datasets row (and the dataset's counts) and leaves a 'dataset-delete' bulk_runs marker; the rows
    # then go in chunks. A sample whose dataset row is gone is counted nowhere, so its delete skips the per-row
    # count upkeep (0.6 + 0.7 s per 100k rows: over half of a delete's row cost; the deleter lowers the
    # watermarks itself). Until the marker goes, the dataset's name and id stay taken (an id is given out again
    # only when it is the top one: a new dataset with it would inherit the rows not yet deleted).
    # selections get the sample index a chunked delete looks them up by.
    f"""
    DROP TRIGGER sample_stats_delete;
    CREATE TRIGGER sample_stats_delete AFTER DELETE ON samples
    WHEN old.id <= {_STATS_COUNTED} AND EXISTS (SELECT 1 FROM datasets WHERE id = old.dataset_id)
    BEGIN {_stats_upsert("old.", -1)}
        UPDATE meta SET value = (SELECT coalesce(max(id), 0) FROM samples)
        WHERE key = 'stats_upto' AND CAST(value AS INTEGER) > (SELECT coalesce(max(id), 0) FROM samples);
    END;
    DROP TRIGGER score_stats_sample_delete;
    CREATE TRIGGER score_stats_sample_delete AFTER DELETE ON samples
    WHEN EXISTS (SELECT 1 FROM datasets WHERE id = old.dataset_id)
      OR EXISTS (SELECT 1 FROM sample_scores WHERE sample_id = old.id)
    BEGIN
        UPDATE score_stats SET n = n - 1 WHERE dataset_id = old.dataset_id AND status = old.status
            AND (rubric, bucket) IN (SELECT rubric, CAST(score AS INTEGER) FROM sample_scores
                                     WHERE sample_id = old.id AND stale = 0);
        DELETE FROM sample_scores WHERE sample_id = old.id;
    END;
    CREATE TRIGGER datasets_name_held BEFORE INSERT ON datasets
    WHEN EXISTS (SELECT 1 FROM bulk_runs WHERE kind = 'dataset-delete' AND run = new.name)
    BEGIN SELECT RAISE(ABORT, 'a dataset of that name is still being deleted: try again once the delete has finished');
    END;
    CREATE TRIGGER datasets_rename_held BEFORE UPDATE OF name ON datasets
    WHEN EXISTS (SELECT 1 FROM bulk_runs WHERE kind = 'dataset-delete' AND run = new.name)
    BEGIN SELECT RAISE(ABORT, 'a dataset of that name is still being deleted: try again once the delete has finished');
    END;
    CREATE TRIGGER datasets_id_held AFTER INSERT ON datasets
    WHEN EXISTS (SELECT 1 FROM bulk_runs WHERE kind = 'dataset-delete'
                 AND CAST(json_extract(info, '$.id') AS INTEGER) = new.id)
    BEGIN SELECT RAISE(ABORT, 'a dataset is still being deleted: try again once the delete has finished');
    END;
    CREATE INDEX selections_sample ON selections(sample_id);
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"


def default_db_path() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME)) / "workbench.db"


def resolve_db_path(path: str | os.PathLike | None = None) -> Path:
    """--db PATH, else $WORKBENCH_DB, else the platformdirs user data dir."""
    if path:
        return Path(path)
    env = os.environ.get("WORKBENCH_DB")
    return Path(env) if env else default_db_path()


class SchemaTooNew(RuntimeError):
    pass


class StoreLocationError(RuntimeError):
    """--db or WORKBENCH_DB names a file in a directory that does not exist (a typo must not create a store)."""


def connect(path: str | os.PathLike, *, check_same_thread: bool = True) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                           check_same_thread=check_same_thread)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    # Only takes effect on a new, empty file. Samples are ~2 KB, so 4 KB pages hold one or two: 16 KB pages make a
    # bulk import ~25 % faster and its WAL ~20 % smaller.
    conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
    _set_wal(conn)
    conn.execute("PRAGMA synchronous = NORMAL")   # durable across process crashes in WAL mode
    conn.execute("PRAGMA foreign_keys = OFF")     # lineage ids may point at deleted datasets' rows
    conn.execute("PRAGMA cache_size = -65536")    # 64 MB page cache
    conn.execute("PRAGMA temp_store = MEMORY")
    return conn


def _set_wal(conn: sqlite3.Connection) -> None:
    """Switching a new file to WAL needs its exclusive lock, and SQLite refuses at once, without its busy handler,
    while another process that opened the file too holds the write lock (deadlock avoidance): retry instead."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as e:
            if not busy.is_busy(e) or time.monotonic() > deadline:
                raise
        time.sleep(busy.POLL_S)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to SCHEMA_VERSION (PRAGMA user_version records it).

    Several processes may open a new store at once (a detached `index` and the next import): the version is
    re-read under the write lock (BEGIN IMMEDIATE waits on busy_timeout), so only the first one migrates and the
    others find the work done."""
    version = _user_version(conn)
    _refuse_too_new(conn, version)
    if version == SCHEMA_VERSION:
        return SCHEMA_VERSION
    with transaction(conn):
        version = _user_version(conn)
        _refuse_too_new(conn, version)
        for target in range(version, SCHEMA_VERSION):
            _run_migration(conn, target)
    return SCHEMA_VERSION


def _user_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def _refuse_too_new(conn: sqlite3.Connection, version: int) -> None:
    if version > SCHEMA_VERSION:
        name = conn.execute("PRAGMA database_list").fetchone()[2] or "the store"
        raise SchemaTooNew(f"{name}: store schema version {version} is newer than this workbench "
                           f"(schema {SCHEMA_VERSION}); upgrade the workbench to open it")


def _run_migration(conn: sqlite3.Connection, target: int) -> None:
    # executescript would COMMIT our transaction first; run statement by statement instead.
    for stmt in _split_sql(MIGRATIONS[target]):
        conn.execute(stmt)
    conn.execute(f"PRAGMA user_version = {target + 1}")


def _split_sql(script: str) -> list[str]:
    out, buf = [], ""
    for line in script.splitlines():
        buf += line + "\n"
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out


@contextmanager
def transaction(conn: sqlite3.Connection, *, immediate: bool = True):
    """One explicit transaction: all or nothing. Nested use is an error (it would hide partial commits).
    A busy store makes it wait for the write lock, however long, never fail (workbench/busy.py)."""
    busy.begin(conn, immediate)
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")


def check_location(path: str | os.PathLike | None = None) -> Path:
    """The store's path; its directory is created only for the default location, else it must exist."""
    p = resolve_db_path(path)
    if p == default_db_path():
        private_dir(p.parent)
    elif not p.parent.is_dir():
        given = "--db" if path else "WORKBENCH_DB"
        raise StoreLocationError(f"{given} {p}: the directory {p.parent} does not exist (only the default store "
                                 f"location is created; make the directory first)")
    return p


def open_store(path: str | os.PathLike | None = None, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """Open (creating and migrating if needed) the store; returns a plain sqlite3 connection in autocommit mode.

    Use `transaction(conn)` for writes. Hot paths use the sqlite3 module directly (executemany, keyset queries).
    """
    p = check_location(path)
    create_private(p)     # 0600 before SQLite opens it: its -wal and -shm files take the same mode
    conn = connect(p, check_same_thread=check_same_thread)
    migrate(conn)
    import_recovery.remove_abandoned(conn)
    bulk_recovery.recover(conn)
    return conn


def data_version(conn: sqlite3.Connection) -> int:
    """Changes whenever another connection commits: poll it and re-query only then."""
    return conn.execute("PRAGMA data_version").fetchone()[0]


# --- datasets -------------------------------------------------------------------------------------

def get_dataset(conn: sqlite3.Connection, name: str) -> sqlite3.Row | None:
    cur = conn.execute("SELECT id, name, kind, created_at FROM datasets WHERE name = ?", (name,))
    return cur.fetchone()


def dataset_id(conn: sqlite3.Connection, name: str) -> int:
    row = get_dataset(conn, name)
    if row is None:
        raise KeyError(f"no dataset named {name!r}")
    return row[0]


def ensure_dataset(conn: sqlite3.Connection, name: str, kind: str = "sft") -> int:
    """Inside a transaction: the dataset's id, creating it if needed."""
    row = get_dataset(conn, name)
    if row:
        if row[2] != kind and kind:
            conn.execute("UPDATE datasets SET kind = 'mixed' WHERE id = ? AND kind != ?", (row[0], kind))
        return row[0]
    return conn.execute("INSERT INTO datasets (name, kind, created_at) VALUES (?, ?, ?)",
                        (name, kind, now())).lastrowid


def list_datasets(conn: sqlite3.Connection) -> list[dict]:
    """Each dataset with its row count and counts per status (status_counts: maintained counts)."""
    out = {}
    for did, name, kind, created in conn.execute("SELECT id, name, kind, created_at FROM datasets ORDER BY id"):
        out[did] = {"id": did, "name": name, "kind": kind, "created_at": created, "rows": 0,
                    **{s: 0 for s in STATUSES}}
    for did, by in status_counts(conn).items():
        if did in out:
            for status, n in by.items():
                out[did][status] = out[did].get(status, 0) + n
                out[did]["rows"] += n
    return list(out.values())


def status_counts(conn: sqlite3.Connection, dataset_id: int | None = None) -> dict[int, dict[str, int]]:
    """{dataset_id: {status: n}} from the maintained Balance counts (sample_stats, kept right by triggers) plus a
    GROUP BY over the not-yet-folded tail, in one read snapshot: a few ms at any size once folded (a GROUP BY over
    every row took ~1 s at 10M rows)."""
    ds, params = ("AND dataset_id = ?", (dataset_id,)) if dataset_id is not None else ("", ())
    # `+`: the tail is found by id; an index on dataset_id would read the whole dataset (6 s a call at 10M rows,
    # on Review's runner between two keys)
    tail_ds = ds.replace("dataset_id", "+dataset_id")
    out: dict[int, dict[str, int]] = {}
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN")
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'stats_upto'").fetchone()
        upto = int(row[0]) if row else 0
        for did, status, n in conn.execute(
                f"SELECT dataset_id, status, sum(n) FROM sample_stats WHERE dim = 'task_type' {ds} "
                "GROUP BY dataset_id, status", params):
            by = out.setdefault(did, {})
            by[status] = by.get(status, 0) + (n or 0)
        for did, status, n in conn.execute(f"SELECT dataset_id, status, count(*) FROM samples WHERE id > ? {tail_ds} "
                                           f"AND {IN_A_DATASET} GROUP BY dataset_id, status", (upto, *params)):
            by = out.setdefault(did, {})
            by[status] = by.get(status, 0) + n
    finally:
        if own:
            conn.execute("COMMIT")
    return out


# --- full-text search -------------------------------------------------------------------------------

FTS_MERGE_PAGES = 16   # FTS5 'merge' work per chunk (pages): 64 cost 1.7x the CPU of no merging, 16 1.25x
FTS_CHUNK = 500   # rows a statement (~40 ms at 1M rows); transactions end as workbench/short_tx.py says


def fts_sync(conn: sqlite3.Connection, *, chunk: int = FTS_CHUNK) -> int:
    """Index samples added since the last sync, in short transactions so writers are never held up long (each
    ends after short_tx.LIMIT_S or at once when another writer waits, which then gets its turn: committing and
    beginning again at once let a waiting decision miss the free lock for a second and more).

    Safe to run from several processes at once: each chunk re-reads the watermark inside its transaction.
    """
    total = 0
    with ShortTransactions(conn) as tx:
        while True:
            row = conn.execute("SELECT value FROM meta WHERE key = 'fts_upto'").fetchone()
            upto = int(row[0]) if row else 0
            top = conn.execute("SELECT max(id) FROM (SELECT id FROM samples WHERE id > ? ORDER BY id LIMIT ?)",
                               (upto, chunk)).fetchone()[0]
            if top is None:
                return total
            n = conn.execute("INSERT INTO samples_fts (rowid, instruction, input, response) "
                             "SELECT id, instruction, input, response FROM samples WHERE id > ? AND id <= ?",
                             (upto, top)).rowcount
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('fts_upto', ?)", (str(top),))
            # a little of FTS5's segment merging now and then, so that no chunk meets a whole level's merge at once
            conn.execute("INSERT INTO samples_fts (samples_fts, rank) VALUES ('merge', ?)", (FTS_MERGE_PAGES,))
            total += n
            tx.next()


def fts_replace(conn: sqlite3.Connection, sample_id: int, old: dict, new: dict) -> None:
    """Inside a transaction, after a sample's text changed: keep the FTS index in step (if it covers the row)."""
    fts_replace_many(conn, [(sample_id, old, new)])


def fts_replace_many(conn: sqlite3.Connection, changes: list[tuple[int, dict, dict]]) -> None:
    """fts_replace for several samples, (id, old texts, new texts) each, one change per sample: every delete,
    then every insert, each in id order. FTS5 writes its pending entries out as a new segment whenever a rowid
    comes out of order, so a delete and insert per row made a segment per row, and merging those took seconds
    inside one short transaction of a big `clean --normalize`."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'fts_upto'").fetchone()
    covered = sorted((c for c in changes if row and c[0] <= int(row[0])), key=lambda c: c[0])
    conn.executemany("INSERT INTO samples_fts (samples_fts, rowid, instruction, input, response) "
                     "VALUES ('delete', ?, ?, ?, ?)",
                     [(sid, old["instruction"], old["input"], old["response"]) for sid, old, _ in covered])
    conn.executemany("INSERT INTO samples_fts (rowid, instruction, input, response) VALUES (?, ?, ?, ?)",
                     [(sid, new["instruction"], new["input"], new["response"]) for sid, _, new in covered])


_FTS_TOKEN = re.compile(r"[^\W_]+")  # what FTS5's unicode61 tokenizer keeps: runs of letters and digits


def fts_query(text: str) -> str:
    """A user's search words as a safe FTS5 query: every token quoted (no operators), all required.

    Split the way the index tokenizes ("don't" -> "don" "t"): with detail=column a quoted multi-token phrase
    would be an error."""
    return " ".join(f'"{t}"' for t in _FTS_TOKEN.findall(text))
