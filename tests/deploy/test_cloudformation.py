"""deploy/cloudformation/tables.yaml: the table settings, and the stack deployed on moto's
CloudFormation carries the seed chain with leases.create_table off (the template's tables
are what the worker needs: keys, streams with both images, the lease table's pk/sk)."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from tests.deploy.deploy_files import DEPLOY, load_yaml
from tests.integration.helpers import run_orders, seed_config
from worker.app import App

TEMPLATE = DEPLOY / "cloudformation" / "tables.yaml"
EXPECTED_KEYS = {
    "OrdersTable": [("orderId", "HASH")],
    "EventsTable": [("eventId", "HASH")],
    "ShipmentsTable": [("orderId", "HASH")],
    "DeadLettersTable": [("id", "HASH")],
    "LeaseTable": [("pk", "HASH"), ("sk", "RANGE")],
}


def _template() -> dict[str, Any]:
    return dict(load_yaml(TEMPLATE))


def test_tables_settings() -> None:
    template = _template()
    tables = {name: r for name, r in template["Resources"].items() if r["Type"] == "AWS::DynamoDB::Table"}
    assert set(tables) == set(EXPECTED_KEYS)
    defaults = {name: p["Default"] for name, p in template["Parameters"].items()}
    names = {logical: defaults[r["Properties"]["TableName"]["!Ref"]] for logical, r in tables.items()}
    assert names == {"OrdersTable": "orders", "EventsTable": "events", "ShipmentsTable": "shipments",
                     "DeadLettersTable": "dead_letters", "LeaseTable": "stream-worker-leases"}
    for logical, resource in tables.items():
        props = resource["Properties"]
        assert resource["DeletionPolicy"] == "Retain" and resource["UpdateReplacePolicy"] == "Retain"
        assert props["BillingMode"] == "PAY_PER_REQUEST" and "ProvisionedThroughput" not in props
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert props["DeletionProtectionEnabled"] is True
        assert [(k["AttributeName"], k["KeyType"]) for k in props["KeySchema"]] == EXPECTED_KEYS[logical]
        attributes = {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]}
        assert attributes == {name: "S" for name, _ in EXPECTED_KEYS[logical]}
        streamed = logical in {"OrdersTable", "EventsTable"}
        assert (props.get("StreamSpecification") == {"StreamViewType": "NEW_AND_OLD_IMAGES"}) == streamed, logical
        assert streamed or "StreamSpecification" not in props
    outputs = template["Outputs"]
    assert outputs["OrdersStreamArn"]["Value"] == {"!GetAtt": "OrdersTable.StreamArn"}
    assert outputs["EventsStreamArn"]["Value"] == {"!GetAtt": "EventsTable.StreamArn"}


def test_table_keys_match_the_seed_config() -> None:
    config = load_yaml(DEPLOY.parent / "config" / "worker.yaml")
    tables = _template()["Resources"]
    for logical, resource in (("orders", "OrdersTable"), ("events", "EventsTable"), ("shipments", "ShipmentsTable")):
        assert config["tables"][logical]["key"] == tables[resource]["Properties"]["KeySchema"][0]["AttributeName"]


@pytest.mark.integration
async def test_stack_deploys_and_carries_the_chain(moto_url: str, prefix: str, aws: dict[str, Any]) -> None:
    cloudformation = boto3.client("cloudformation", endpoint_url=moto_url, region_name="us-east-1")
    parameters = {"OrdersTableName": f"{prefix}orders", "EventsTableName": f"{prefix}events",
                  "ShipmentsTableName": f"{prefix}shipments", "DeadLettersTableName": f"{prefix}dead_letters",
                  "LeaseTableName": f"{prefix}leases"}
    stack = f"{prefix}tables".replace("_", "-")
    cloudformation.create_stack(
        StackName=stack, TemplateBody=TEMPLATE.read_text(),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
    )
    described = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
    assert described["StackStatus"] == "CREATE_COMPLETE"
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described["Outputs"]}

    ddb = aws["dynamodb"]
    for key, table in (("OrdersStreamArn", parameters["OrdersTableName"]),
                       ("EventsStreamArn", parameters["EventsTableName"])):
        description = (await ddb.describe_table(TableName=table))["Table"]
        assert outputs[key] == description["LatestStreamArn"]
        assert description["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
        assert description["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        assert description["DeletionProtectionEnabled"] is True
    for table in (parameters["ShipmentsTableName"], parameters["DeadLettersTableName"], parameters["LeaseTableName"]):
        description = (await ddb.describe_table(TableName=table))["Table"]
        assert (description.get("StreamSpecification") or {}).get("StreamEnabled") is not True

    def use_stack_tables(doc: dict[str, Any]) -> None:
        doc["leases"]["create_table"] = False  # the template made it

    config = seed_config(moto_url, prefix, use_stack_tables)
    assert config.leases.table == parameters["LeaseTableName"]
    app = App(config, metrics_port=0)
    order_ids = [f"cfn-{i}" for i in range(3)]
    await run_orders(app, ddb, config, order_ids)
