"""Derive the AWS API actions that the worker's code can call, from the code itself.

Rule (documented in docs/operations.md, "IAM policy"):

1. Every ``.py`` file under ``worker/`` is parsed, except ``worker/local/`` (the embedded
   moto endpoint, ``demo`` and ``create-tables``: local tooling that never runs with the
   task role; production tables come from ``deploy/cloudformation/tables.yaml``).
2. An *SDK use* is an attribute ``<expr>.<name>`` that is either called (``x.put_item(...)``)
   or passed as an argument (``call_aws("GetRecords", client.get_records, ...)`` passes the
   bound method), where ``<name>`` is an operation of the clients the worker creates
   (``dynamodb``, ``dynamodbstreams``, ``events``, ``sqs``, ``sns``), named the way botocore
   names client methods: ``botocore.xform_name(OperationName) == name``, with the operation
   names taken from botocore's own service models. The resource API's ``Table`` methods
   (``put_item``, ``update_item``, ``get_item``, ``query``, ``scan``, ``delete_item``, and
   ``batch_writer`` -> BatchWriteItem) are the same names and map to the same DynamoDB actions.
   ``get_waiter("x")`` maps to the operation that botocore's waiter model polls for ``x``
   (``table_exists`` -> DescribeTable); ``get_paginator("x")`` to operation ``x``.
3. Not SDK uses: attributes that are only read (``config.leases.create_table``), and calls
   on the worker's own ``Publisher`` protocol (a receiver named ``publisher``), whose
   ``publish(event)`` is implemented by the publishers in ``worker/publishing/``.
4. A name that is an operation of several services (``tag_resource``, ``add_permission`` ...)
   maps to the candidate services that the module itself names (a string literal equal to
   the service name, or the module's file name, e.g. ``sqs.py``); if that leaves more or
   less than one, the explicit :data:`AMBIGUOUS` table decides, and without an entry there
   the derivation fails, so an ambiguous new call can never pass unnoticed.
5. The IAM action is ``<signing name>:<OperationName>``; the signing name comes from the
   service model (``dynamodbstreams`` signs as ``dynamodb``, so its actions are
   ``dynamodb:GetRecords`` etc.).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import botocore.session
from botocore import xform_name

REPO = Path(__file__).resolve().parents[2]
WORKER = REPO / "worker"
SERVICES = ("dynamodb", "dynamodbstreams", "events", "sqs", "sns")
EXCLUDED_DIRS = ("local",)
NOT_SDK_RECEIVERS = frozenset({"publisher"})
# The dynamodb resource Table's own actions whose names are not client operations.
RESOURCE_ONLY = {"batch_writer": ("dynamodb", "BatchWriteItem"),
                 "wait_until_exists": ("dynamodb", "DescribeTable"),
                 "wait_until_not_exists": ("dynamodb", "DescribeTable")}
# (module path relative to the repo, method name) -> service, for names several services share.
AMBIGUOUS: dict[tuple[str, str], str] = {}


@dataclass(frozen=True, order=True)
class Use:
    action: str  # e.g. dynamodb:GetRecords
    path: str
    line: int
    source: str


class AmbiguousCall(AssertionError):
    pass


@lru_cache(maxsize=1)
def _session() -> botocore.session.Session:
    return botocore.session.get_session()


@lru_cache(maxsize=1)
def operations() -> dict[str, dict[str, str]]:
    """python method name -> {service: OperationName}."""
    found: dict[str, dict[str, str]] = {}
    for service in SERVICES:
        for operation in _session().get_service_model(service).operation_names:
            found.setdefault(xform_name(operation), {})[service] = operation
    return found


@lru_cache(maxsize=1)
def signing_names() -> dict[str, str]:
    return {service: _session().get_service_model(service).signing_name for service in SERVICES}


@lru_cache(maxsize=1)
def waiters() -> dict[str, dict[str, str]]:
    """waiter name as passed to get_waiter (``table_exists``) -> {service: OperationName}."""
    found: dict[str, dict[str, str]] = {}
    for service in SERVICES:
        try:
            model = _session().get_waiter_model(service)
        except Exception:  # botocore raises UnknownServiceError/DataNotFoundError for no waiters
            continue
        for name in model.waiter_names:
            found.setdefault(xform_name(name), {})[service] = model.get_waiter(name).operation
    return found


def _receiver_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id.lstrip("_")
    if isinstance(node, ast.Attribute):
        return node.attr.lstrip("_")
    return None


def _string_literals(tree: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def _resolve(candidates: dict[str, str], path: Path, tree: ast.AST, name: str, rel: str) -> list[tuple[str, str]]:
    if len(candidates) == 1:
        return list(candidates.items())
    hinted = set(candidates) & (_string_literals(tree) | {path.stem})
    if len(hinted) == 1:
        service = hinted.pop()
        return [(service, candidates[service])]
    if (rel, name) in AMBIGUOUS:
        service = AMBIGUOUS[(rel, name)]
        return [(service, candidates[service])]
    raise AmbiguousCall(
        f"{rel}: {name!r} is an operation of {sorted(candidates)}; add ({rel!r}, {name!r}) to AMBIGUOUS "
        "in tests/deploy/aws_calls.py"
    )


def _sdk_attributes(tree: ast.AST) -> list[tuple[ast.Attribute, ast.Call | None]]:
    """(attribute, call) pairs: attributes called, or passed as call arguments."""
    found: list[tuple[ast.Attribute, ast.Call | None]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Attribute):
            found.append((node.func, node))
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            if isinstance(arg, ast.Attribute):
                found.append((arg, None))
    return found


def module_uses(path: Path, source: str | None = None, rel: str | None = None) -> list[Use]:
    """SDK uses in one module (``source``/``rel`` let tests scan code that is not a file)."""
    rel = rel or path.relative_to(REPO).as_posix()
    tree = ast.parse(path.read_text() if source is None else source, filename=rel)
    ops = operations()
    uses: list[Use] = []
    for node in ast.walk(tree):  # getattr(client, "put_item") counts like client.put_item
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in ops):
            for service, operation in _resolve(ops[node.args[1].value], path, tree, node.args[1].value, rel):
                uses.append(Use(f"{signing_names()[service]}:{operation}", rel, node.lineno, ast.unparse(node)[:120]))
    for attribute, call in _sdk_attributes(tree):
        name = attribute.attr
        if _receiver_name(attribute.value) in NOT_SDK_RECEIVERS:
            continue
        resolved: list[tuple[str, str]] = []
        if name in ops:
            resolved = _resolve(ops[name], path, tree, name, rel)
        elif name in RESOURCE_ONLY:
            resolved = [RESOURCE_ONLY[name]]
        elif name in ("get_waiter", "get_paginator") and call is not None and call.args:
            first = call.args[0]
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                raise AmbiguousCall(f"{rel}:{attribute.lineno}: {name} with a non-literal name")
            table = waiters() if name == "get_waiter" else ops
            if first.value not in table:
                raise AmbiguousCall(f"{rel}:{attribute.lineno}: unknown {name}({first.value!r})")
            resolved = _resolve(table[first.value], path, tree, first.value, rel)
        for service, operation in resolved:
            action = f"{signing_names()[service]}:{operation}"
            uses.append(Use(action, rel, attribute.lineno, ast.unparse(call if call is not None else attribute)[:120]))
    return uses


def worker_modules() -> list[Path]:
    return sorted(
        p for p in WORKER.rglob("*.py")
        if not any(part in EXCLUDED_DIRS for part in p.relative_to(WORKER).parts[:-1])
    )


def code_uses() -> list[Use]:
    return sorted(use for path in worker_modules() for use in module_uses(path))


def code_actions() -> set[str]:
    return {use.action for use in code_uses()}
