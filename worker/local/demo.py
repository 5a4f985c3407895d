"""`stream-worker demo`: the seed's order -> shipment chain, for real, on the local endpoint.

Starts an embedded moto server (or, with ``--endpoint dynamodb-local``, AWS's DynamoDB
Local, installed on first use: worker/local/dynamodb_local.py), creates the tables, runs the worker in this process,
writes sample orders and prints the chain like the seed's execution table. Exits 0 when
every order reached its end state (status PROCESSING, shipment DISPATCHED, one event).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from worker.app import App
from worker.aws import AwsClients
from worker.config import Config, load_config
from worker.local.dynamodb_local import DynamoDBLocal
from worker.local.moto_endpoint import EmbeddedMoto, point_aws_at
from worker.local.tables import create_tables
from worker.records import StreamRecord


@dataclass
class Trace:
    """Handler calls seen by the demo, keyed by order id."""

    base: float = field(default_factory=time.monotonic)
    calls: dict[str, list[tuple[str, str, float, float, str]]] = field(default_factory=dict)

    def __call__(self, record: StreamRecord, route: str, outcome: str, started: float, ended: float) -> None:
        image = record.new_image or {}
        order_id = image.get("orderId") or (image.get("payload") or {}).get("orderId")
        if order_id is not None:
            self.calls.setdefault(str(order_id), []).append(
                (route, outcome, started, ended, record.sequence_number)
            )


def _ms(value: float) -> str:
    return f"{value * 1000:8.1f} ms"


def _print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    line = "+".join("-" * (w + 2) for w in widths)
    print(f"+{line}+")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |")
    print(f"+{line}+")
    for row in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |")
    print(f"+{line}+")


async def _state(clients: AwsClients, config: Config, order_ids: list[str]) -> dict[str, dict[str, Any]]:
    resource = await clients.dynamodb_resource()
    orders = await resource.Table(config.tables["orders"].name)
    shipments = await resource.Table(config.tables["shipments"].name)
    events = await resource.Table(config.tables["events"].name)
    all_events = (await events.scan(ConsistentRead=True)).get("Items", [])
    state: dict[str, dict[str, Any]] = {}
    for order_id in order_ids:
        order = (await orders.get_item(Key={"orderId": order_id}, ConsistentRead=True)).get("Item", {})
        shipment = (await shipments.get_item(Key={"orderId": order_id}, ConsistentRead=True)).get("Item", {})
        mine = [e for e in all_events if e.get("correlationId") == order_id]
        state[order_id] = {"order": order, "shipment": shipment, "events": mine}
    return state


def _done(entry: dict[str, Any]) -> bool:
    return (
        entry["order"].get("status") == "PROCESSING"
        and entry["shipment"].get("status") == "DISPATCHED"
        and len(entry["events"]) == 1
    )


DemoEndpoint = Literal["moto", "dynamodb-local"]
DEMO_ENDPOINTS: tuple[DemoEndpoint, ...] = ("moto", "dynamodb-local")


class _LocalEndpoint(Protocol):
    url: str

    def stop(self) -> None: ...


def _start_endpoint(name: DemoEndpoint) -> _LocalEndpoint:
    if name == "moto":
        return EmbeddedMoto().start()
    local = DynamoDBLocal().start()  # DynamoDBLocalUnavailable says what is missing
    point_aws_at(local.url)
    return local


async def run_demo(config_path: str | Path, orders: int, timeout: float, endpoint_name: DemoEndpoint = "moto") -> int:
    endpoint = _start_endpoint(endpoint_name)
    try:
        config = load_config(config_path)
        what = "moto server" if endpoint_name == "moto" else "DynamoDB Local"
        print(f"local endpoint: {what} at {endpoint.url}")
        clients = AwsClients(config.aws)
        try:
            created = await create_tables(config, clients)
            print(f"created tables: {', '.join(created) or '(already there)'}")
            trace = Trace()
            app = App(config, observers=[trace], metrics_port=0)
            await app.start()
            try:
                table = await (await clients.dynamodb_resource()).Table(config.tables["orders"].name)
                order_ids = [f"order-{i:03d}" for i in range(1, orders + 1)]
                written: dict[str, float] = {}
                for order_id in order_ids:
                    written[order_id] = time.monotonic()
                    await table.put_item(Item={"orderId": order_id, "status": "NEW", "amount": 10 + len(written)})
                deadline = time.monotonic() + timeout
                state = await _state(clients, config, order_ids)
                while not all(_done(e) for e in state.values()) and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                    state = await _state(clients, config, order_ids)
            finally:
                await app.stop()
        finally:
            await clients.close()
    finally:
        endpoint.stop()
    _report(order_ids, written, trace, state)
    missing = [order_id for order_id, entry in state.items() if not _done(entry)]
    if missing:
        print(f"FAILED: {len(missing)} order(s) did not reach the end of the chain within {timeout:.0f} s: "
              + ", ".join(missing[:10]))
        return 1
    print(f"OK: {len(order_ids)} orders went NEW -> PROCESSING -> shipment DISPATCHED; no events left.")
    return 0


def _report(order_ids: list[str], written: dict[str, float], trace: Trace, state: dict[str, dict[str, Any]]) -> None:
    first = order_ids[0]
    calls = trace.calls.get(first, [])
    base = written[first]
    by_route = {route: (started, ended, seq) for route, outcome, started, ended, seq in calls if outcome == "ok"}
    order = by_route.get("order-processing")
    ship = by_route.get("shipment-dispatch")
    event = (state[first]["events"] or [{}])[0]
    print(f"\nExecution table for {first}:")
    rows = [
        ["1", "Order created", f"{{orderId: {first}, status: 'NEW'}}", "written to orders", _ms(0)],
        ["2", "Change sent to the orders stream", f"INSERT seq {order[2] if order else '?'}", "stream holds the record", ""],
        ["3", "order-processing triggered", "reads the INSERT", "handler started", _ms(order[0] - base) if order else "-"],
        ["4", "Order updated", "status NEW -> PROCESSING", "orders table updated", _ms(order[1] - base) if order else "-"],
        ["5", "Shipment event published", f"{{orderId: {first}, action: 'SHIP'}} id {str(event.get('eventId', '?'))[:8]}",
         "events (outbox) row + stream record", _ms(order[1] - base) if order else "-"],
        ["6", "shipment-dispatch triggered", "reads ShipmentRequested", f"shipment {state[first]['shipment'].get('status', '?')}",
         _ms(ship[1] - base) if ship else "-"],
        ["7", "No more events", "-", "end of the chain", ""],
    ]
    _print_table(["step", "action", "event/data", "result/effect", "time"], rows)
    print("\nAll orders:")
    summary = []
    for order_id in order_ids:
        entry = state[order_id]
        done = {route: ended for route, outcome, _, ended, _ in trace.calls.get(order_id, []) if outcome == "ok"}
        total = done.get("shipment-dispatch")
        summary.append([
            order_id,
            str(entry["order"].get("status", "-")),
            str(entry["shipment"].get("status", "-")),
            str(len(entry["events"])),
            _ms(total - written[order_id]) if total else "-",
        ])
    _print_table(["order", "order status", "shipment", "events", "created -> dispatched"], summary)
