"""bench/results.json: every benchmark merges its keys into one file, with the run's date
and machine."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results.json"

# Benchmarks run only against local endpoints (moto server, the simulator): fake credentials.
LOCAL_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}
os.environ.update(LOCAL_AWS_ENV)
os.environ.pop("AWS_SESSION_TOKEN", None)
os.environ.pop("AWS_PROFILE", None)


def machine() -> str:
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def merge(section: str, values: dict[str, Any], replace_prefix: str | None = None) -> dict[str, Any]:
    """Add ``values``; with ``replace_prefix``, first drop every earlier key starting with it
    (a benchmark that renamed or dropped a key leaves no stale figure behind)."""
    data: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if replace_prefix:
        data = {key: value for key, value in data.items() if not key.startswith(replace_prefix)}
    data.update(values)
    data.setdefault("runs", {})[section] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
    }
    RESULTS.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return data


def print_table(title: str, rows: list[tuple[str, str, str]]) -> None:
    print(f"\n{title}")
    widths = [max(len(r[i]) for r in rows + [("metric", "value", "reference")]) for i in range(3)]
    header = ("metric", "value", "reference")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
