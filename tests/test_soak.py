"""The fault-injection soak (``bench/soak.py``), short: a real ``radinfill serve`` process fed
a messy stream (odd names, a product on another grid) while it is killed, terminated, its
output writes fail (the disk full during corrections too) and a second instance tries to start
on its state directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(900)
def test_short_soak_loses_nothing_and_never_shows_a_partial_output(tmp_path):
    report = tmp_path / "soak.json"
    command = [
        sys.executable,
        str(REPO / "bench" / "soak.py"),
        "--products", "120",
        "--kills", "4",
        "--terms", "1",
        "--burst", "30",
        "--model", "baseline:advection",
        "--max-uptime", "3",
        "--faults", "write_radolan=EIO:0.05,write_netcdf=EIO:0.05,write_sidecar=EIO:0.05,"
                    "correction:write_netcdf=ENOSPC:0.4",
        "--drain-timeout", "300",
        "--json", str(report),
        "--keep", str(tmp_path / "run"),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=880, cwd=REPO)
    results = json.loads(report.read_text())
    assert results["problems"] == [], done.stdout[-4000:]
    assert done.returncode == 0
    assert results["starts"] == 1 + 4 + 1  # every kill and SIGTERM was followed by a restart
    assert results["term_exit_status"] == [0, 0]  # the chaos SIGTERM and the final one
    assert results["lost"] == 0
    assert results["outputs_checked"] == results["valid_keys"] > 100
    assert results["partial_seen"] == 0
    assert results["files_seen_by_reader"] >= 3 * results["valid_keys"]  # RADOLAN, nc, json
    assert results["faults_injected"] > 0  # the fault point really fired
    kinds = results["deliveries"]
    assert {"correction", "duplicate", "odd_name", "truncated", "garbled", "late"} <= set(kinds)
    assert kinds["odd_grid"] == 1
    assert results["bad_inputs"] == kinds["truncated"] + kinds["garbled"] + kinds["odd_grid"]
    assert results["second_instance"] == {
        "exit_status": 2,
        "named_the_running_one": True,
        "lock_kept": True,
        "running_one_alive": True,
    }
