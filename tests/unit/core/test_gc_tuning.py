"""worker/gc_tuning.py, in a child interpreter (freezing this test process's objects would
keep them alive for the rest of the suite)."""

from __future__ import annotations

import json
import subprocess
import sys

from worker.gc_tuning import GEN0_THRESHOLD


def test_start_up_objects_are_frozen_and_young_collections_are_rarer() -> None:
    script = (
        "import gc, json; import worker.app; from worker.gc_tuning import tune_garbage_collector; "
        "before = (gc.get_threshold(), gc.get_freeze_count()); tune_garbage_collector(); "
        "print(json.dumps([before, [gc.get_threshold(), gc.get_freeze_count()]]))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    (threshold_before, frozen_before), (threshold_after, frozen_after) = json.loads(out)
    assert frozen_before == 0 and frozen_after > 10_000  # the SDK and the worker's modules
    assert threshold_after == [GEN0_THRESHOLD, *threshold_before[1:]]
