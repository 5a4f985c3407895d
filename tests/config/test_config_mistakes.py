"""Config mistakes users make are caught at load, naming the key, the reason and the fix."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from tests.config.support import HANDLERS, document, write_config
from worker.cli import main
from worker.config import load_config, parse_config
from worker.errors import ConfigError
from worker.processing.filters import FilterPatternError, compile_filters
from worker.processing.router import Router


def problems_of(doc: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        Router.from_config(parse_config(doc, env={}))
    return info.value.problems


def check_config(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["check-config", "--config", str(path)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# ---- filters against the record's shape -------------------------------------------------------


def test_check_config_rejects_a_filter_at_the_wrong_level(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    route = {"name": "eur", "table": "payments", "handler": f"{HANDLERS}:per_record",
             "filters": [{"NewImage": {"currency": {"S": ["EUR"]}}}]}
    code, output = check_config(write_config(tmp_path, document(route)), capsys)

    assert code == 2
    assert "routes[0].filters[0].NewImage" in output
    assert "did you mean `dynamodb.NewImage`?" in output


@pytest.mark.parametrize(
    ("pattern", "where", "hint"),
    [
        ({"eventname": ["INSERT"]}, "filters[0].eventname", "did you mean `eventName`?"),
        ({"dynamodb": {"NewImages": {"a": {"S": ["x"]}}}}, "filters[0].dynamodb.NewImages",
         "did you mean `NewImage`?"),
        ({"dynamodb": {"eventName": ["INSERT"]}}, "filters[0].dynamodb.eventName", "move it up a level"),
        ({"dynamodb": {"NewImage": {"status": ["NEW"]}}}, "filters[0].dynamodb.NewImage.status",
         "`status: {S: [...]}`"),
        ({"dynamodb": {"Keys": {"id": {"s": ["x"]}}}}, "filters[0].dynamodb.Keys.id.s", "did you mean `S`?"),
        ({"userIdentity": {"principalID": ["dynamodb.amazonaws.com"]}}, "filters[0].userIdentity.principalID",
         "did you mean `principalId`?"),
    ],
)
def test_misplaced_pattern_keys_get_a_hint(pattern: dict[str, Any], where: str, hint: str) -> None:
    with pytest.raises(FilterPatternError) as info:
        compile_filters([pattern], "filters")
    assert info.value.path == where
    assert hint in info.value.reason


@pytest.mark.parametrize(
    "pattern",
    [
        {"eventName": ["REMOVE"], "userIdentity": {"type": ["Service"], "principalId": ["dynamodb.amazonaws.com"]}},
        {"eventSource": ["aws:dynamodb"], "awsRegion": ["eu-west-1"], "eventID": [{"prefix": "a"}],
         "eventVersion": ["1.1"]},
        {"dynamodb": {"NewImage": {"deletedAt": [{"exists": False}], "amount": {"N": [{"numeric": [">", 10]}]}},
                      "OldImage": {"tags": {"SS": ["vip"]}}, "Keys": {"paymentId": {"S": [{"prefix": "p-"}]}},
                      "SizeBytes": [{"numeric": ["<", 400000]}], "StreamViewType": ["NEW_AND_OLD_IMAGES"],
                      "SequenceNumber": [{"exists": True}], "ApproximateCreationDateTime": [{"exists": True}]}},
    ],
)
def test_patterns_on_every_key_of_a_record_pass(pattern: dict[str, Any]) -> None:
    assert compile_filters([pattern], "filters") is not None


# ---- handler signatures -----------------------------------------------------------------------


def test_check_config_rejects_a_one_argument_handler(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    route = {"name": "audit", "table": "payments", "handler": f"{HANDLERS}:one_argument"}
    code, output = check_config(write_config(tmp_path, document(route)), capsys)

    assert code == 2
    assert "routes[0].handler" in output
    assert "takes (record)" in output and "(record, ctx)" in output


def test_a_batch_handler_needs_records_and_ctx() -> None:
    routes = [{"name": "b1", "table": "payments", "batch_handler": f"{HANDLERS}:one_argument"},
              {"name": "b2", "table": "payments", "batch_handler": f"{HANDLERS}:three_arguments"},
              {"name": "b3", "table": "payments", "batch_handler": f"{HANDLERS}:batch"}]
    problems = dict(problems_of(document(*routes)))

    assert list(problems) == ["routes[0].batch_handler", "routes[1].batch_handler"]
    assert "(records, ctx)" in problems["routes[0].batch_handler"]
    assert "takes (record, ctx, extra)" in problems["routes[1].batch_handler"]


def test_optional_extra_parameters_are_accepted() -> None:
    route = {"name": "kw", "table": "payments", "handler": f"{HANDLERS}:with_keyword_only"}
    assert len(Router.from_config(parse_config(document(route), env={})).routes) == 1


def test_a_batch_handler_import_error_names_the_batch_handler_key() -> None:
    routes = [{"name": "ok", "table": "payments", "handler": f"{HANDLERS}:per_record"},
              {"name": "b", "table": "payments", "batch_handler": f"{HANDLERS}:no_such_function"}]
    [(path, reason)] = problems_of(document(*routes))
    assert path == "routes[1].batch_handler"
    assert "no attribute 'no_such_function'" in reason


# ---- import strings and unknown keys ----------------------------------------------------------


def test_a_dotted_path_without_colon_gets_the_fix() -> None:
    route = {"name": "audit", "table": "payments", "handler": "payments.handlers.audit"}
    with pytest.raises(ConfigError) as info:
        parse_config(document(route), env={})
    [(path, reason)] = info.value.problems
    assert path == "routes[0].handler"
    assert "did you mean 'payments.handlers:audit'?" in reason


@pytest.mark.parametrize(
    ("section", "path", "suggestion"),
    [
        ({"routes": [{"name": "a", "table": "payments", "hanlder": f"{HANDLERS}:per_record"}]},
         "routes[0].hanlder", "'handler'"),
        ({"tables": {"payments": {"name": "payments", "stream": {"starting_positon": "LATEST"}}}},
         "tables.payments.stream.starting_positon", "'starting_position'"),
        ({"processing": {"dead_letter": {"type": "jsonl", "pth": "x"}}}, "processing.dead_letter.pth", "'path'"),
        ({"publsher": {}}, "publsher", "'publisher'"),
    ],
)
def test_unknown_keys_get_did_you_mean(section: dict[str, Any], path: str, suggestion: str) -> None:
    doc = document()
    doc.update(section)
    with pytest.raises(ConfigError) as info:
        parse_config(doc, env={})
    reasons = dict(info.value.problems)
    assert path in reasons, reasons
    assert f"did you mean {suggestion}?" in reasons[path]


# ---- handler modules next to the config -------------------------------------------------------


def test_handler_module_next_to_the_config_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "deploy"
    folder.mkdir()
    (folder / "payments_audit_handlers.py").write_text(
        "async def audit(record, ctx):\n    return None\n", encoding="utf-8")
    route = {"name": "audit", "table": "payments", "handler": "payments_audit_handlers:audit"}
    path = write_config(folder, document(route))
    monkeypatch.chdir(tmp_path)  # not the config's folder
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "payments_audit_handlers", raising=False)

    code, output = check_config(path, capsys)

    assert code == 0, output
    assert Router.from_config(load_config(path)).routes[0].name == "audit"


def test_a_missing_module_error_names_both_places_searched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    route = {"name": "audit", "table": "payments", "handler": "no_such_payments_module:audit"}
    path = write_config(tmp_path, document(route))
    monkeypatch.setattr(sys, "path", list(sys.path))

    with pytest.raises(ConfigError) as info:
        Router.from_config(load_config(path))

    [(key, reason)] = info.value.problems
    assert key == "routes[0].handler"
    assert "sys.path (the working directory included)" in reason
    assert f"next to the config ({tmp_path.resolve()})" in reason


def test_a_typed_handler_under_the_wrong_key_is_told_which_key() -> None:
    routes = [{"name": "r1", "table": "payments", "handler": f"{HANDLERS}:typed_batch"},
              {"name": "r2", "table": "payments", "batch_handler": f"{HANDLERS}:typed_record"},
              {"name": "r3", "table": "payments", "handler": f"{HANDLERS}:typed_record"},
              {"name": "r4", "table": "payments", "batch_handler": f"{HANDLERS}:typed_batch"}]
    problems = dict(problems_of(document(*routes)))

    assert list(problems) == ["routes[0].handler", "routes[1].batch_handler"]
    assert "name it under 'batch_handler'" in problems["routes[0].handler"]
    assert "name it under 'handler'" in problems["routes[1].batch_handler"]
