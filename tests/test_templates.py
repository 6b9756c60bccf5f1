"""Prompt templates: packaged files with versions, user overrides, safe rendering, and the CLI over them."""
from __future__ import annotations

import pytest

from workbench import templating
from workbench.templating import TemplateError, load

TASK_TEMPLATES = ("respond", "self-instruct", "evol-depth", "evol-breadth", "evol-equal", "evol-quality",
                  "backtranslate", "curate", "judge", "preference-rate", "augment-translate", "augment-paraphrase",
                  "augment-equivalence", "label")


def test_every_packaged_template_loads_with_a_version_and_declares_its_variables():
    names = templating.package_names()
    assert set(TASK_TEMPLATES) <= set(names)
    for name in names:
        t = load(name)
        assert t.source == "package" and t.version and t.about
        assert set(t.declared_vars) == t.variables, name
        assert any(role == "user" for role, _ in t.sections), name


def test_render_inserts_values_once_and_verbatim():
    t = load("judge")
    nasty = "Say {{response}} and {{#if input}}x{{/if}}\n\n\n\nend  "
    msgs = t.render(instruction=nasty, input="", response=" leading space kept")
    user = msgs[-1]["content"]
    assert nasty in user                       # not re-expanded, blank lines inside a value kept
    assert " leading space kept" in user
    assert "Input given with the instruction" not in user   # {{#if input}} dropped for an empty input
    with_input = t.render(instruction="a", input="the input", response="b")[-1]["content"]
    assert "Input given with the instruction" in with_input and "the input" in with_input


def test_missing_variable_is_an_error():
    with pytest.raises(TemplateError, match="response"):
        load("judge").render(instruction="a", input="")


def test_empty_sections_are_left_out():
    msgs = load("respond").render(instruction="Hi", input="", system="")
    assert msgs == [{"role": "user", "content": "Hi"}]
    msgs = load("respond").render(instruction="Hi", input="ctx", system="Be brief.")
    assert msgs == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi\n\nctx"}]


def test_override_from_config_dir_changes_the_version(tmp_path):
    odir = templating.override_dir()
    odir.mkdir(parents=True)
    (odir / "curate").write_text("# version: 7\n# about: mine\n=== user ===\nRate {{instruction}} / {{response}}\n",
                                 encoding="utf-8")
    t = load("curate")
    assert t.source == str(odir / "curate")
    assert t.version.startswith("7+local.") and len(t.version) == len("7+local.") + 8
    assert t.render(instruction="I", response="R") == [{"role": "user", "content": "Rate I / R"}]
    assert load("judge").source == "package"


@pytest.mark.parametrize("text, message", [
    ("=== user ===\nhi\n", "version"),
    ("# version: 1\nno sections\n", "section"),
    ("# version: 1\n=== robot ===\nhi\n", "unknown section"),
    ("# version: 1\nstray\n=== user ===\nhi\n", "header line"),
])
def test_malformed_override_is_a_clear_error(text, message):
    odir = templating.override_dir()
    odir.mkdir(parents=True, exist_ok=True)
    (odir / "judge").write_text(text, encoding="utf-8")
    with pytest.raises(TemplateError, match=message):
        load("judge")


def test_unknown_and_unsafe_names():
    with pytest.raises(TemplateError, match="no template named"):
        load("nope")
    with pytest.raises(TemplateError, match="bad template name"):
        load("../config")


def test_cli_list_show_copy(cli):
    code, out, err = cli("templates", "list")
    assert code == 0, err
    assert any(line.startswith("curate ") and " v2 " in line for line in out.splitlines())
    code, out, _ = cli("templates", "show", "curate")
    assert code == 0 and "Score: N" in out and out.startswith("# curate v2 (packaged)")
    code, out, _ = cli("templates", "copy", "curate")
    assert code == 0
    path = out.strip()
    assert path.endswith("templates/curate")
    code, _, err = cli("templates", "copy", "curate")
    assert code == 2 and "already exists" in err
    with open(path, "a", encoding="utf-8") as f:
        f.write("\nBe strict.\n")
    code, out, _ = cli("templates", "list", "--json")
    import json
    entry = next(t for t in json.loads(out) if t["name"] == "curate")
    assert entry["version"].startswith("2+local.") and entry["source"] == path
    code, _, err = cli("templates", "show", "nope")
    assert code == 2 and "no template named" in err


def test_config_option_decides_where_overrides_live(cli, tmp_path):
    """`--config X` puts template overrides beside X for everything the command does, tasks included."""
    other = tmp_path / "elsewhere" / "config.toml"
    code, out, err = cli("templates", "copy", "judge", "--config", str(other))
    assert code == 0, err
    assert (other.parent / "templates" / "judge").exists()
    code, out, err = cli("templates", "list", "--json", "--config", str(other))
    import json
    judge = [t for t in json.loads(out) if t["name"] == "judge"][0]
    assert "local" in json.dumps(judge)
