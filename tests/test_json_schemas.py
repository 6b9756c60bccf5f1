"""The JSON schemas sent in `response_format` state everything the readers check, so a server that honours them
(grammar-constrained decoding in llama.cpp, vLLM, SGLang; OpenAI's structured outputs) can only return replies the
readers accept. Checked two ways: what each task sends, and that every object a schema admits is read."""
from __future__ import annotations

import itertools
import json

import pytest

from llm_server import LLMServer
from taskkit import add_dataset, config_for, run
from workbench.parsing import ParseError, instance_schema, judge_schema, parse_instance, parse_judge_json
from workbench.tasks.label import DEFAULT_LABELS, label_schema, parse_labels


def admits(schema: dict, value) -> bool:
    """A small validator for the keywords our schemas use (type, enum, minimum, maximum, minLength, maxLength,
    properties, required, additionalProperties)."""
    t = schema.get("type")
    if t == "object":
        if not isinstance(value, dict):
            return False
        props = schema.get("properties", {})
        if schema.get("additionalProperties") is False and set(value) - set(props):
            return False
        if any(k not in value for k in schema.get("required", ())):
            return False
        return all(admits(props[k], v) for k, v in value.items() if k in props)
    if t == "integer" and (isinstance(value, bool) or not isinstance(value, int)):
        return False
    if t == "string" and not isinstance(value, str):
        return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    if "minimum" in schema and value < schema["minimum"] or "maximum" in schema and value > schema["maximum"]:
        return False
    if "minLength" in schema and len(value) < schema["minLength"]:
        return False
    return not ("maxLength" in schema and len(value) > schema["maxLength"])


def test_judge_schema_states_the_readers_rules():
    s = judge_schema()
    assert s["additionalProperties"] is False and set(s["required"]) == set(s["properties"])
    for key in ("instruction_clarity", "response_quality", "alignment", "overall"):
        assert s["properties"][key] == {"type": "integer", "minimum": 1, "maximum": 10}
    assert s["properties"]["rationale"]["minLength"] == 1


JUDGE_VALUES = [0, 1, 5, 10, 11, -1, 7.5, "7", "x", None, True]


@pytest.mark.parametrize("value", JUDGE_VALUES)
def test_every_judge_object_the_schema_admits_is_read(value):
    base = {"instruction_clarity": 5, "response_quality": 5, "alignment": 5, "overall": 5, "rationale": "ok"}
    for key, rationale in itertools.product(["instruction_clarity", "alignment", "overall"], ["ok", "", 3]):
        obj = {**base, key: value, "rationale": rationale}
        if admits(judge_schema(), obj):
            parse_judge_json(json.dumps(obj))                # must not raise
    for extra in ({"extra": 1}, {}):
        obj = {**base, **extra}
        assert admits(judge_schema(), obj) == (not extra)


def test_label_schema_is_the_label_sets():
    s = label_schema(DEFAULT_LABELS)
    assert s["additionalProperties"] is False and s["required"] == ["task_type", "domain", "difficulty"]
    for f, allowed in DEFAULT_LABELS.items():
        assert s["properties"][f] == {"type": "string", "enum": allowed}
    for tt, dom in itertools.product(["coding", "Baking", "black sheep", ""], ["science", "Science", "x"]):
        obj = {"task_type": tt, "domain": dom, "difficulty": "easy"}
        if admits(s, obj):
            assert parse_labels(json.dumps(obj), DEFAULT_LABELS) == obj
        else:
            with pytest.raises(ParseError):
                parse_labels(json.dumps({**obj, "domain": "x" if dom == "Science" else dom}), DEFAULT_LABELS)


def test_instance_schema_admits_only_readable_instances():
    for order in (False, True):
        s = instance_schema(order)
        assert s["additionalProperties"] is False and set(s["required"]) == {"input", "output"}
        assert list(s["properties"])[0] == ("output" if order else "input")
        for inp, out in itertools.product(["", "a text", 3], ["", "Paris", None]):
            obj = {"input": inp, "output": out}
            if admits(s, obj):
                assert parse_instance(json.dumps(obj)) == (inp, out)


def _sent_schemas(srv) -> list[dict]:
    return [b["response_format"]["json_schema"]["schema"] for b in srv.stats.bodies
            if (b.get("response_format") or {}).get("type") == "json_schema"]


def test_tasks_send_their_schemas(conn, db_path):
    add_dataset(conn, "pairs", [{"instruction": "Name a prime.", "response": "7"}])
    sets = {"task_type": ["closed_qa", "other"], "domain": ["math", "other"], "difficulty": ["easy", "hard"]}

    def reply(messages, body):
        schema = body["response_format"]["json_schema"]["schema"]
        if "task_type" in schema["properties"]:
            return json.dumps({"task_type": "closed_qa", "domain": "math", "difficulty": "easy"})
        return json.dumps({"instruction_clarity": 9, "response_quality": 8, "alignment": 9, "overall": 8,
                           "rationale": "Right."})

    with LLMServer(reply=reply) as srv:
        cfg = {**config_for(srv, json_mode="json_schema"), "labels": sets}
        assert run(conn, db_path, "judge", config=cfg, dataset="pairs")["kept"] == 1
        assert run(conn, db_path, "label", config=cfg, dataset="pairs")["kept"] == 1
        sent = _sent_schemas(srv)
    assert sent[0] == judge_schema()
    assert sent[1] == label_schema(sets)


def test_preference_with_the_judge_rubric_sends_the_judge_schema(conn, db_path):
    add_dataset(conn, "p", [{"instruction": "Is 7 prime?"}])

    def reply(messages, body):
        if body.get("response_format"):
            return json.dumps({"instruction_clarity": 9, "response_quality": 8, "alignment": 9, "overall": 8,
                               "rationale": "Right."})
        return "Yes."

    with LLMServer(reply=reply, models=("a", "b", "j")) as srv:
        cfg = config_for(srv, ("a", "b", "j"), json_mode="json_schema")
        cfg["pools"]["gen"] = {"endpoints": ["a", "b"], "mode": "each"}
        run(conn, db_path, "preference", config=cfg, dataset="p", pool="gen", judge="j", params={"rubric": "judge"})
        sent = _sent_schemas(srv)
    assert len(sent) == 2 and all(s == judge_schema() for s in sent)


def test_endpoints_send_the_schema_by_default():
    """A default endpoint asks for json_schema, so a server that decodes under the schema (llama.cpp's grammar)
    can only return values the parser accepts; a server that refuses it is asked again with json_object."""
    from workbench.endpoints import Endpoint
    from workbench.llm import Client
    schema = {"type": "object", "properties": {"overall": {"type": "integer", "minimum": 1, "maximum": 10}},
              "required": ["overall"], "additionalProperties": False}
    rf = Client(Endpoint(name="e", base_url="http://127.0.0.1:1/v1", model="m")).response_format(True, schema)
    assert rf == {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
