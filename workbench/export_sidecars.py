"""The files written beside an export's data: the dataset card (README.md of a directory export), LLaMA-Factory's
dataset_info.json entry (merged into the user's file, their entries kept) and the Axolotl `datasets:` snippet."""
from __future__ import annotations

import json
from pathlib import Path

from .licenses import hub_id
from .safe_output import OutputError

SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"))


def _q(text) -> str:
    """A YAML scalar: JSON's double-quoted string is valid YAML and escapes everything."""
    return json.dumps(str(text), ensure_ascii=False)


def size_category(n: int) -> str:
    for limit, name in SIZE_CATEGORIES:
        if n < limit:
            return name
    return "n>100M"


# --- LLaMA-Factory -----------------------------------------------------------------------------------------

def llama_factory_entry(file_name: str, ranking: bool, has_system: bool) -> dict:
    """Its sharegpt layout with the default tags (from/value, human/gpt), as its data/README.md documents."""
    columns = {"messages": "conversations"}
    if has_system:
        columns["system"] = "system"
    if ranking:
        columns.update(chosen="chosen", rejected="rejected")
    entry = {"file_name": file_name, "formatting": "sharegpt"}
    if ranking:
        entry["ranking"] = True
    entry["columns"] = columns
    return entry


def merge_dataset_info(path: Path, name: str, entry: dict, force: bool) -> bytes:
    """The user's dataset_info.json with our entry added; their file is refused (never rewritten) if it is not a
    JSON object, and an entry of the same name that differs is only replaced with --force."""
    existing: dict = {}
    if path.exists():
        try:
            existing = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise OutputError(f"{path}: cannot read it as JSON ({e}); it was left as it is") from None
        if not isinstance(existing, dict):
            raise OutputError(f"{path}: not a JSON object of dataset entries; it was left as it is")
        if name in existing and existing[name] != entry and not force:
            raise OutputError(f"{path}: already has an entry {name!r}; pass --force to replace it")
    existing[name] = entry
    return (json.dumps(existing, ensure_ascii=False, indent=2) + "\n").encode()


# --- Axolotl -----------------------------------------------------------------------------------------------

def axolotl_snippet(data_path: str, ranking: bool, gz: bool, snapshot: int) -> str:
    """The `datasets:` entry current Axolotl documents: `chat_template` over OpenAI-style `messages` for SFT,
    `chat_template.default` (messages + chosen/rejected message objects) with `rl: dpo` for preference pairs."""
    lines = [f"# Axolotl config lines for this export (Curation Workbench snapshot {snapshot}); merge them into your"
             " config.", ]
    if ranking:
        lines.append("rl: dpo")
    lines += ["datasets:", f"  - path: {_q(data_path)}", "    ds_type: json", "    split: train"]
    if ranking:
        lines += ["    type: chat_template.default", "    field_messages: messages", "    field_chosen: chosen",
                  "    field_rejected: rejected"]
    else:
        lines += ["    type: chat_template", "    field_messages: messages"]
    lines += ["    message_property_mappings:", "      role: role", "      content: content"]
    if not ranking:
        lines.append('    roles_to_train: ["assistant"]')
    if gz:
        lines.append("    # the file is gzip-compressed; ds_type: json reads it through the datasets library")
    return "\n".join(lines) + "\n"


# --- dataset card --------------------------------------------------------------------------------------------

def _table(title: str, counts: dict, total: int) -> list[str]:
    if not counts:
        return []
    out = [f"### {title}", "", "| value | rows | share |", "|---|---:|---:|"]
    for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0]))):
        out.append(f"| {str(k).replace('|', '/')} | {n:,} | {n / total:.1%} |")
    return out + [""]


def dataset_card(manifest: dict, data_rel: str, title: str, balance: dict, kind_tags: list[str]) -> str:
    counts = manifest["counts"]
    rows = counts["rows"]
    licenses = manifest["licenses"]
    hub = [hub_id(x) for x in licenses]
    front = ["---"]
    if len(licenses) == 1 and hub[0]:
        front.append(f"license: {hub[0]}")
    elif licenses:
        front += ["license: other", f"license_name: {_q(' AND '.join(licenses))}",
                  f"license_details: {_q('rows under several licences: ' + ', '.join(licenses))}"]
    else:
        front.append("license: unknown")
    front += [f"pretty_name: {_q(title)}", "size_categories:", f"- {size_category(rows)}", "task_categories:",
              "- text-generation", "tags:", *[f"- {t}" for t in kind_tags], "configs:", "- config_name: default",
              "  data_files:", "  - split: train", f"    path: {_q(data_rel)}", "---", ""]
    body = [f"# {title}", "",
            f"Exported by Curation Workbench {manifest['workbench_version']} on {manifest['created_at']} as "
            f"`{manifest['format']}` ({manifest['layout']} layout), snapshot {manifest['snapshot_id']}. "
            f"The full provenance is in `{manifest['manifest_name']}`.", "",
            "## Counts", "", f"- rows: {rows:,}"]
    for k, n in counts["excluded_by_filter"].items():
        unscored = counts.get("excluded_unscored", {}).get(k)
        body.append(f"- excluded by `{k}`: {n:,}" + (f" ({unscored:,} of them not scored on its rubric)" if unscored
                                                      else ""))
    for k, n in counts["skipped_by_reason"].items():
        body.append(f"- skipped, {k}: {n:,}")
    body.append("")
    body += _table("By status", counts["by_status"], rows)
    for dim, values in balance.items():
        body += _table(f"By {dim}", values, rows)
    prov = manifest["provenance"]
    body += ["## Provenance", ""]
    if prov["sources"]:
        body += ["| source file | sha256 | format | rows imported | rows here | licence |", "|---|---|---|---:|---:|---|"]
        for s in prov["sources"]:
            body.append(f"| {Path(s['file']).name} | `{(s['sha256'] or '')[:16]}` | {s['format']} | "
                        f"{s['rows_imported']:,} | {s['exported_rows']:,} | {s['license'] or 'not recorded'} |")
        body.append("")
    for st in prov["steps"]:
        if st["step"] == "review":
            body.append("- review decisions: " + ", ".join(f"{a} {n:,}" for a, n in st["decisions"].items()))
        else:
            body.append(f"- {st['step']} run `{st['run']}`" + (f" ({st['reason']})" if st.get("reason") else "")
                        + f": {st['rows']:,} rows")
    for j in prov["jobs"]:
        tmpl = ", ".join(f"{t['name']}@{t['version']}" for t in j["templates"])
        models = ", ".join(m["model"] for m in j["models"])
        body.append(f"- job {j['job_id']} ({j.get('task', 'judge')}): templates {tmpl or '-'}; models {models or '-'}; "
                    f"made {j['made_rows']:,}, judged {j['judged_rows']:,} rows")
    body.append(f"- licences: {', '.join(licenses) if licenses else 'none recorded'}"
                + (f" ({prov['rows_without_license']:,} rows from datasets without a recorded licence)"
                   if prov["rows_without_license"] else ""))
    return "\n".join(front + body) + "\n"
