"""The wheel maps daemon/, model/ and train/ into the radinfill namespace and nothing else."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build a wheel from a copy of the tracked sources (no network, no build isolation)."""
    src = tmp_path_factory.mktemp("src")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in listed:
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "-o", str(out), str(src)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("radinfill-*.whl")
    return built


def test_wheel_contains_mapped_subpackages(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in (
        "radinfill/__init__.py",
        "radinfill/cli.py",
        "radinfill/radolan/codec.py",
        "radinfill/daemon/__init__.py",
        "radinfill/model/__init__.py",
        "radinfill/train/__init__.py",
    ):
        assert module in names
    top_level = {name.split("/")[0] for name in names}
    assert not top_level & {"model", "train", "daemon", "tests", "bench"}


def test_wheel_declares_console_script_and_xarray_engine(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    (entry_points,) = [n for n in archive.namelist() if n.endswith("entry_points.txt")]
    text = archive.read(entry_points).decode()
    assert "radinfill = radinfill.cli:main" in text
    assert "[xarray.backends]" in text
    (metadata,) = [n for n in archive.namelist() if n.endswith("METADATA")]
    requires = archive.read(metadata).decode()
    for package in ("torch", "xarray", "netCDF4", "watchdog", "prometheus-client", "structlog"):
        assert f"Requires-Dist: {package}>=" in requires
    assert "Requires-Dist: apscheduler<4,>=3.10" in requires or "apscheduler>=3.10,<4" in requires
