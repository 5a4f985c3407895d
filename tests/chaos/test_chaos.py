"""The short chaos run (CI): the seed chain on each endpoint (moto, DynamoDB Local) behind the fault proxy, 3 worker
processes, 2 kill -9 and 1 SIGTERM with restarts, fault profiles switching every few
seconds; every order must complete exactly once in effect (see controller.py).

The long form is ``make chaos`` (``python -m tests.chaos.controller``). ``CHAOS_SEED``
replays another seed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos.controller import ChaosPlan, run_chaos

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("CHAOS_SEED", "20240611"))


def test_seed_chain_survives_kills_sigterms_and_aws_faults(endpoint_url: str, tmp_path: Path) -> None:
    plan = ChaosPlan(orders=150, duration=30.0, workers=3, kills=2, sigterms=1, seed=SEED,
                     settle_timeout=120.0)
    report = run_chaos(plan, tmp_path, endpoint_url=endpoint_url)
    print(report.table())  # shown by pytest when the test fails (and with -s)
    assert report.ok, "\n".join(report.failures)
    # The run did what it says: every disruption happened and faults were injected.
    assert report.kills == 2 and report.sigterms == 1
    assert report.faults["throttle"] + report.faults["provisioned"] > 0
    assert report.faults["server_error"] > 0
    assert report.duplicated_effects == 0 and report.checkpoint_regressions == []
    assert set(report.sigterm_exit_codes) == {0}
