"""deploy/iam/worker-policy.json grants exactly what the code calls, on exactly the resources.

The action list is derived from the code (tests/deploy/aws_calls.py: an AST scan of worker/
mapped to operations through botocore's own service models), so adding an AWS call without
updating the policy fails here. The integration test then runs the seed chain on moto and
checks every AWS request the worker actually made against the policy's statements.
"""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.deploy.aws_calls import AmbiguousCall, code_actions, code_uses, module_uses
from tests.deploy.deploy_files import load_yaml
from tests.integration.helpers import chain_done, seed_config, setup_tables, wait_until, write_orders
from worker.config import LeaseConfig

REPO = Path(__file__).resolve().parents[2]
POLICY_PATH = REPO / "deploy" / "iam" / "worker-policy.json"
ACCOUNT, REGION = "123456789012", "us-east-1"
STREAM_ACTIONS = {"dynamodb:DescribeStream", "dynamodb:GetShardIterator", "dynamodb:GetRecords", "dynamodb:ListStreams"}
ARN = re.compile(r"^arn:aws:(?P<service>[a-z0-9-]+):(?P<region>[a-z0-9-]*):(?P<account>\d{12}):(?P<resource>.+)$")


def _policy() -> dict[str, Any]:
    return json.loads(POLICY_PATH.read_text())


def _statements() -> list[dict[str, Any]]:
    return list(_policy()["Statement"])


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _policy_actions() -> set[str]:
    return {action for s in _statements() for action in _as_list(s["Action"])}


def allowed(action: str, resource: str) -> bool:
    """A minimal IAM evaluation for this policy: Allow statements only, ``*``/``?`` wildcards."""
    for statement in _statements():
        if statement["Effect"] != "Allow":
            continue
        if not any(a.lower() == action.lower() for a in _as_list(statement["Action"])):
            continue
        if any(fnmatch.fnmatchcase(resource, pattern) for pattern in _as_list(statement["Resource"])):
            return True
    return False


# -- the action set ---------------------------------------------------------------------------

def test_policy_actions_are_exactly_the_actions_the_code_calls() -> None:
    in_code = code_actions()
    in_policy = _policy_actions()
    missing = sorted(in_code - in_policy)
    unused = sorted(in_policy - in_code)
    where = {a: [f"{u.path}:{u.line} {u.source}" for u in code_uses() if u.action == a][:3] for a in missing}
    assert not missing and not unused, (
        f"deploy/iam/worker-policy.json is out of date.\n  called but not granted: {where}\n"
        f"  granted but never called: {unused}"
    )


def test_code_scan_finds_the_known_calls() -> None:
    """Guards the scanner itself: a few calls that exist must be found where they are."""
    uses = code_uses()
    found = {(u.action, u.path) for u in uses}
    assert ("dynamodb:GetRecords", "worker/retrieval/reader.py") in found  # passed to call_aws, not called
    assert ("dynamodb:DescribeTable", "worker/leases/table.py") in found  # includes the table_exists waiter
    assert ("dynamodb:CreateTable", "worker/leases/table.py") in found
    assert ("sqs:SendMessage", "worker/publishing/sqs.py") in found
    assert ("events:PutEvents", "worker/publishing/eventbridge.py") in found
    # worker/local (demo, create-tables) is local tooling and not scanned.
    assert not [u for u in uses if u.path.startswith("worker/local/")]
    # The Publisher protocol's publish(event) is not sns:Publish.
    assert not [u for u in uses if u.path == "worker/handlers/orders.py" and u.action == "sns:Publish"]


SYNTHETIC = '''
async def f(client, streams, table, ctx, config, sns_client):
    await client.batch_get_item(RequestItems={})
    await call_aws("ListStreams", streams.list_streams, TableName="x")
    await client.get_waiter("table_not_exists").wait(TableName="x")
    async for page in client.get_paginator("scan").paginate(TableName="x"):
        pass
    async with table.batch_writer() as batch:
        pass
    await ctx.publisher.publish(event)        # our Publisher protocol: not an SDK call
    if config.leases.create_table:            # read, not called: not an SDK call
        pass
    await getattr(client, "transact_write_items")(TransactItems=[])
    await sqs.change_message_visibility(QueueUrl="q", ReceiptHandle="h", VisibilityTimeout=0)
'''


def test_scanner_rules_on_synthetic_code() -> None:
    uses = module_uses(Path("synthetic.py"), source=SYNTHETIC, rel="worker/synthetic.py")
    assert {u.action for u in uses} == {
        "dynamodb:BatchGetItem", "dynamodb:ListStreams", "dynamodb:DescribeTable", "dynamodb:Scan",
        "dynamodb:BatchWriteItem", "dynamodb:TransactWriteItems", "sqs:ChangeMessageVisibility",
    }


def test_scanner_refuses_unresolvable_ambiguous_names() -> None:
    # tag_resource is an operation of dynamodb, events and sns: which client is it?
    with pytest.raises(AmbiguousCall):
        module_uses(Path("x.py"), source="async def f(c):\n    await c.tag_resource(ResourceArn='a', Tags=[])\n",
                    rel="worker/x.py")
    # A module that names its service resolves it.
    uses = module_uses(Path("x.py"), source="async def f(clients):\n    c = await clients.client('sns')\n"
                       "    await c.tag_resource(ResourceArn='a', Tags=[])\n", rel="worker/x.py")
    assert [u.action for u in uses] == ["sns:TagResource"]


# -- the resources ----------------------------------------------------------------------------

def test_policy_shape_and_scoping() -> None:
    policy = _policy()
    assert policy["Version"] == "2012-10-17"
    sids = [s["Sid"] for s in _statements()]
    assert len(sids) == len(set(sids)), "statement ids must be unique"
    for statement in _statements():
        assert statement["Effect"] == "Allow"
        assert set(statement) == {"Sid", "Effect", "Action", "Resource"}, statement["Sid"]
        actions = _as_list(statement["Action"])
        assert all(":" in a and "*" not in a for a in actions), f"{statement['Sid']}: no wildcard actions"
        for resource in _as_list(statement["Resource"]):
            match = ARN.match(resource)
            assert match, f"{statement['Sid']}: {resource!r} is not a scoped ARN"
            assert match["account"] == ACCOUNT and match["region"] == REGION, resource
            service_prefixes = {a.split(":")[0] for a in actions}
            assert service_prefixes == {match["service"]}, f"{statement['Sid']}: actions and ARN service differ"
            if match["service"] == "dynamodb":
                is_stream = "/stream/" in match["resource"]
                for action in actions:
                    assert (action in STREAM_ACTIONS) == is_stream, (
                        f"{statement['Sid']}: {action} on {resource}: stream actions go on "
                        "table/<name>/stream/*, table actions on table/<name>"
                    )
                assert re.fullmatch(r"table/[A-Za-z0-9_.-]+(/stream/\*)?", match["resource"]), resource


def _dynamodb_grants() -> dict[str, set[str]]:
    """table (or 'table/stream') -> actions granted on it."""
    grants: dict[str, set[str]] = {}
    for statement in _statements():
        for resource in _as_list(statement["Resource"]):
            match = ARN.match(resource)
            assert match
            if match["service"] != "dynamodb":
                continue
            name = match["resource"].split("/")[1] + ("/stream" if "/stream/" in match["resource"] else "")
            grants.setdefault(name, set()).update(_as_list(statement["Action"]))
    return grants


def test_policy_tables_match_the_table_template_and_config_defaults() -> None:
    template = load_yaml(REPO / "deploy/cloudformation/tables.yaml")
    defaults = {name: p["Default"] for name, p in template["Parameters"].items()}
    tables = {defaults[r["Properties"]["TableName"]["!Ref"]]: r["Properties"]
              for r in template["Resources"].values() if r["Type"] == "AWS::DynamoDB::Table"}
    grants = _dynamodb_grants()
    assert {g for g in grants if not g.endswith("/stream")} == set(tables)
    streamed = {name for name, props in tables.items() if "StreamSpecification" in props}
    assert {g.removesuffix("/stream") for g in grants if g.endswith("/stream")} == streamed == {"orders", "events"}
    lease_table = LeaseConfig().table
    assert lease_table == "stream-worker-leases" and lease_table in tables
    # CreateTable only for the lease table (leases.create_table); Scan only for the dead letters.
    assert [t for t, a in grants.items() if "dynamodb:CreateTable" in a] == [lease_table]
    assert [t for t, a in grants.items() if "dynamodb:Scan" in a] == ["dead_letters"]
    assert grants[lease_table] == {"dynamodb:CreateTable", "dynamodb:DescribeTable", "dynamodb:GetItem",
                                   "dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem",
                                   "dynamodb:DeleteItem"}
    assert grants["orders/stream"] == grants["events/stream"] == {
        "dynamodb:DescribeStream", "dynamodb:GetShardIterator", "dynamodb:GetRecords"}
    # Application tables get item access, never table management or deletes.
    for table in ("orders", "events", "shipments", "dead_letters"):
        assert not grants[table] & {"dynamodb:CreateTable", "dynamodb:DeleteItem", "dynamodb:DeleteTable"}


@pytest.mark.integration
def test_iam_accepts_the_policy_document(moto_url: str) -> None:
    iam = boto3.client("iam", endpoint_url=moto_url, region_name=REGION)
    name = f"stream-worker-{id(iam)}"
    created = iam.create_policy(PolicyName=name, PolicyDocument=POLICY_PATH.read_text())["Policy"]
    try:
        version = iam.get_policy_version(PolicyArn=created["Arn"], VersionId=created["DefaultVersionId"])
        document = version["PolicyVersion"]["Document"]
        document = json.loads(document) if isinstance(document, str) else document
        assert document == _policy()
    finally:
        iam.delete_policy(PolicyArn=created["Arn"])


# -- what the worker really calls ----------------------------------------------------------------

class CallRecorder:
    """Every AWS request the worker's clients send: (IAM action, request parameters)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        service_model = model.service_model
        self.calls.append((f"{service_model.signing_name}:{model.name}", dict(params)))


@pytest.mark.integration
async def test_every_request_of_the_seed_chain_is_allowed(
    moto_url: str, prefix: str, aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run the chain (start, orders -> shipments, graceful stop) and check each request that
    the worker sent against the policy, with the test's prefixed table names mapped back to
    the names the policy uses."""
    import worker.aws
    from worker.app import App

    recorder = CallRecorder()
    original_init = worker.aws.AwsClients.__init__

    def recording_init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.session._session.register("before-parameter-build", recorder)

    monkeypatch.setattr(worker.aws.AwsClients, "__init__", recording_init)
    config = seed_config(moto_url, prefix)
    await setup_tables(config)
    recorder.calls.clear()  # setup_tables (local tooling) is not the worker
    names = {table.name: logical for logical, table in config.tables.items()}
    names[config.leases.table] = LeaseConfig().table

    def arns_for(action: str, params: dict[str, Any]) -> list[str]:
        if "TableName" in params:
            return [f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{names[params['TableName']]}"]
        if "StreamArn" in params:
            physical = params["StreamArn"].split("/")[1]
            return [params["StreamArn"].replace(f"table/{physical}/", f"table/{names[physical]}/")]
        if action == "dynamodb:GetRecords":  # an iterator names no stream: it must work on each consumed one
            return [f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{t}/stream/2024-01-01T00:00:00.000"
                    for t in config.consumed_tables]
        raise AssertionError(f"no resource for {action} {sorted(params)}")

    app = App(config, metrics_port=0)
    order_ids = [f"iam-{i}" for i in range(3)]
    await app.start()
    try:
        await write_orders(aws["dynamodb"], config, order_ids)
        await wait_until(lambda: chain_done(aws["dynamodb"], config, order_ids), timeout=60)
    finally:
        await app.stop()

    seen = {action for action, _ in recorder.calls}
    # The chain exercised the stream reads, lease writes and both handlers.
    assert {"dynamodb:DescribeTable", "dynamodb:DescribeStream", "dynamodb:GetShardIterator",
            "dynamodb:GetRecords", "dynamodb:Query", "dynamodb:UpdateItem", "dynamodb:PutItem"} <= seen
    denied = sorted({(action, arn) for action, params in recorder.calls for arn in arns_for(action, params)
                     if not allowed(action, arn)})
    assert not denied, f"requests the policy would deny: {denied}"
    # And the evaluation is not vacuous: a request outside the grants is denied.
    assert not allowed("dynamodb:PutItem", f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/orders")
    assert not allowed("dynamodb:GetRecords", f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/shipments/stream/x")
    assert not allowed("dynamodb:DeleteTable", f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/stream-worker-leases")

