"""The export's profile is taken in the same read as the rows (export_shapes.profile_and_spool): it must be the
profile the former aggregate query gave (held here as the reference), on the inputs that almost match - a
"System" role, an empty system, metadata that is an array, a scalar, null, mixed types, non-ASCII and numeric
keys - and the rows read back from the spool must be the rows iter_samples gives."""
import tempfile

import pytest

from workbench.export_shapes import Profile, profile_and_spool, spooled
from workbench.formats import LABEL_FIELDS
from workbench.samples import insert_samples, iter_samples
from workbench.store import ensure_dataset, transaction


def reference_profile(conn, where: str, params: tuple, with_meta: bool) -> Profile:
    """The aggregate query the exporter ran before the data pass (main a7b9b4f)."""
    labels = ", ".join(f"max({f} IS NOT NULL)" for f in LABEL_FIELDS)
    row = conn.execute(
        f"SELECT count(*), coalesce(max(system != '' OR (messages IS NOT NULL AND messages LIKE '%\"system\"%')), 0), "
        f"{labels}, coalesce(max(rejected IS NOT NULL), 0), "
        f"coalesce(max(messages IS NOT NULL AND json_array_length(messages) > 2), 0) FROM samples WHERE {where}",
        params).fetchone()
    p = Profile(rows=row[0], has_system=bool(row[1]),
                labels=tuple(f for f, has in zip(LABEL_FIELDS, row[2:2 + len(LABEL_FIELDS)]) if has),
                has_rejected=bool(row[-2]), multi_turn=bool(row[-1]))
    if with_meta and p.rows:
        types: dict = {}
        for key, typ in conn.execute(
                f"SELECT j.key, j.type FROM (SELECT metadata FROM samples WHERE metadata IS NOT NULL AND ({where})) s, "
                f"json_each(s.metadata) j GROUP BY 1, 2", params):
            if typ != "null":
                types.setdefault(key, set()).add({"true": "bool", "false": "bool", "integer": "num",
                                                  "real": "num"}.get(typ, typ))
            else:
                types.setdefault(key, set())
        p.meta_keys = {k: ("json" if len(t) > 1 else "plain") for k, t in types.items()}
    return p


RAW_METADATA = ['{"a": 1, "b": "x"}', '{"a": "one"}', '{"Z": null}', '{"\u00e9": true, "e": false}', '{"\u00e4": 1.5}',
                '{"a b": [1], "obj": {"x": 1}}', '[1, "two"]', '"a string"', '5', 'null', '{"10": 1, "9": 2}',
                '{"\U0001F600": 1, "\uFFFD": 2, "B": 1, "a": 2.0}', '{}']


@pytest.fixture
def store(conn):
    with transaction(conn):
        did = ensure_dataset(conn, "d")
        rows = []
        for i in range(60):
            s = {"instruction": f"q {i}", "response": f"a {i}"}
            if i % 5 == 1:
                s["system"] = "" if i % 10 == 1 else "be brief"
            if i % 7 == 2:
                s["messages"] = [{"role": "System" if i % 14 == 2 else "user", "content": f"q {i}"},
                                 {"role": "assistant", "content": f"a {i}"}] + (
                    [{"role": "user", "content": "more"}, {"role": "assistant", "content": "yes"}] if i % 3 else [])
            if i % 11 == 3:
                s["rejected"] = f"worse {i}"
            if i % 4 == 0:
                s["task_type"] = "qa"
            if i % 13 == 5:
                s["language"] = "de"
            rows.append(s)
        insert_samples(conn, did, rows)
        for n, raw in enumerate(RAW_METADATA):     # stored as given: what an old store or another tool may hold
            conn.execute("UPDATE samples SET metadata = ? WHERE id = ?", (raw, 3 + 4 * n))
    return conn


@pytest.mark.parametrize("where,params", [("1", ()), ("id % 2 = 0", ()), ("id < ?", (30,)), ("id > ?", (40,)),
                                          ("metadata IS NULL", ()), ("id = ?", (7,)), ("0", ())])
@pytest.mark.parametrize("with_meta", [True, False])
def test_the_profile_taken_with_the_rows_is_the_former_querys(store, where, params, with_meta):
    want = reference_profile(store, where, params, with_meta)
    with tempfile.TemporaryFile() as spool:
        got = profile_and_spool(store, where, params, with_meta, spool, batch=7)    # several batches
        rows = list(spooled(spool))
    assert got == want
    assert list(got.meta_keys) == list(want.meta_keys)          # the order the columns come in
    assert rows == list(iter_samples(store, where, params))


def test_the_metadata_variants_are_all_selected(store):
    """The reference really sees each odd shape (else the comparison above proves little)."""
    keys = reference_profile(store, "1", (), True).meta_keys
    assert {"a", "b", "Z", "\u00e9", "e", "\u00e4", "a b", "obj", 0, 1, None, "10", "9", "\U0001F600", "\uFFFD",
            "B"} <= set(keys)
    assert keys["a"] == "json" and keys["b"] == "plain"
