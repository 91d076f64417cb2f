"""The systemd units in systemd/: clean ``systemd-analyze verify`` and a low security exposure.

``systemd-analyze verify`` checks that every ``Exec*=`` binary exists and is executable, so the
units are verified as copies whose installed CLI path (/opt/radinfill/venv/bin/radinfill) points
at this environment's ``radinfill`` instead; nothing else is changed. The unit directory of a
file given to ``verify`` or ``security --offline`` is on the unit search path, so a
``radinfill.service.d/`` next to the copy is loaded as a drop-in.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sysconfig
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import REPO

SYSTEMD = REPO / "systemd"
UNITS = ("radinfill.service", "radinfill-retrain.service", "radinfill-retrain.timer")
SERVICES = ("radinfill.service", "radinfill-retrain.service")
GPU_DROPIN = SYSTEMD / "radinfill.service.d" / "gpu.conf"
#: Where the units expect the CLI (README, "Running in production").
INSTALLED_CLI = "/opt/radinfill/venv/bin/radinfill"
#: Highest acceptable overall exposure of `systemd-analyze security` (0 = locked down, 10 =
#: unprotected; "OK" ends at 4.9); the units are at about 1.3, the rest is margin.
MAX_EXPOSURE = 3.0
_OVERALL = re.compile(r"Overall exposure level for (\S+): (\d+(?:\.\d+)?)")


def _analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("systemd-analyze")
    assert tool is not None, "systemd-analyze is missing (Debian: apt-get install systemd)"
    return subprocess.run(
        [tool, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def _install(directory: Path, *, gpu: bool) -> Path:
    """Copy the units into ``directory`` with the CLI path made resolvable here."""
    cli = Path(sysconfig.get_path("scripts")) / "radinfill"
    assert cli.is_file(), f"{cli}: radinfill is not installed in this environment"
    directory.mkdir()
    for name in UNITS:
        text = (SYSTEMD / name).read_text(encoding="utf-8")
        (directory / name).write_text(text.replace(INSTALLED_CLI, str(cli)), encoding="utf-8")
    if gpu:
        (directory / "radinfill.service.d").mkdir()
        shutil.copy(GPU_DROPIN, directory / "radinfill.service.d" / GPU_DROPIN.name)
    return directory


@pytest.fixture(scope="module")
def units(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _install(tmp_path_factory.mktemp("units") / "system", gpu=False)


@pytest.fixture(scope="module")
def gpu_units(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _install(tmp_path_factory.mktemp("gpu") / "system", gpu=True)


def _verify(directory: Path) -> str:
    done = _analyze("verify", "--man=no", "--generators=no", *UNITS, cwd=directory)
    return f"exit status {done.returncode}\n{done.stdout}{done.stderr}"


def test_units_name_the_installed_cli() -> None:
    for name in ("radinfill.service", "radinfill-retrain.service"):
        exec_lines = [
            line for line in (SYSTEMD / name).read_text().splitlines() if line.startswith("Exec")
        ]
        assert any(INSTALLED_CLI in line for line in exec_lines), name


def test_units_verify_without_any_message(units: Path) -> None:
    assert _verify(units) == "exit status 0\n"


def test_units_verify_with_the_gpu_dropin(gpu_units: Path) -> None:
    assert _verify(gpu_units) == "exit status 0\n"


def test_verify_reports_a_broken_unit(tmp_path: Path) -> None:
    """The check above has teeth: a misspelt key and a bad value are reported."""
    broken = _install(tmp_path / "system", gpu=False)
    unit = broken / "radinfill.service"
    text = unit.read_text().replace("WatchdogSec=120", "WatchdogSec=two minutes\nWachdogSec=120")
    unit.write_text(text)
    out = _verify(broken)
    assert "Unknown key 'WachdogSec'" in out
    assert "Failed to parse sec value" in out


def _security(directory: Path, unit: str) -> tuple[float, list[dict[str, str]]]:
    """Overall exposure and the checks that add to it."""
    text = _analyze("security", "--offline=true", unit, cwd=directory)
    assert text.returncode == 0, text.stderr
    match = _OVERALL.search(text.stdout)
    assert match is not None, text.stdout[-500:]
    assert match.group(1) == unit
    table = _analyze("security", "--offline=true", "--json=short", unit, cwd=directory)
    failed = [item for item in json.loads(table.stdout) if item["exposure"]]
    return float(match.group(2)), failed


@pytest.mark.parametrize("unit", SERVICES)
def test_security_exposure_is_low(units: Path, unit: str) -> None:
    exposure, _ = _security(units, unit)
    assert exposure <= MAX_EXPOSURE


@pytest.mark.parametrize("unit", SERVICES)
def test_every_unmet_hardening_check_is_explained(units: Path, unit: str) -> None:
    """Each setting systemd-analyze counts against the unit is named in a comment of it."""
    comments = " ".join(
        line for line in (SYSTEMD / unit).read_text().splitlines() if line.startswith("#")
    )
    _, failed = _security(units, unit)
    assert failed, "expected a few deliberate exceptions (network, W+X memory, ...)"
    for item in failed:
        assert _subject(item["name"]) in comments, f"{unit}: {item['name']} ({item['description']})"


def _subject(check: str) -> str:
    """What a comment must name to explain a check: the setting (``UMask=`` -> ``UMask``), or
    for a check on one value the value (``SystemCallFilter=~@resources`` -> ``@resources``,
    ``RestrictAddressFamilies=~AF_(INET|INET6)`` -> ``AF_INET``)."""
    setting, _, value = check.partition("=")
    if value.startswith("~"):
        return re.sub(r"\((\w+)\|[^)]*\)", r"\1", value[1:])
    return setting


def test_gpu_dropin_opens_only_the_nvidia_devices(gpu_units: Path, units: Path) -> None:
    exposure, failed = _security(gpu_units, "radinfill.service")
    devices = next(item for item in failed if item["name"] == "DeviceAllow=")
    allowed = set(re.findall(r"(char-[\w-]+):(\w+)", devices["description"]))
    nvidia = {name for name, _ in allowed if "nvidia" in name}
    assert nvidia == {
        "char-nvidia",
        "char-nvidia-frontend",
        "char-nvidiactl",
        "char-nvidia-uvm",
        "char-nvidia-caps",
    }
    assert allowed - {(name, "rw") for name in nvidia} == {("char-rtc", "r")}
    assert exposure <= MAX_EXPOSURE
    assert exposure > _security(units, "radinfill.service")[0]


def test_sysusers_creates_the_service_account(tmp_path: Path) -> None:
    tool = shutil.which("systemd-sysusers")
    assert tool is not None, "systemd-sysusers is missing (Debian: apt-get install systemd)"
    (tmp_path / "etc").mkdir()
    conf = tmp_path / "usr/lib/sysusers.d/radinfill.conf"
    conf.parent.mkdir(parents=True)
    shutil.copy(SYSTEMD / "radinfill.sysusers", conf)
    subprocess.run([tool, f"--root={tmp_path}"], check=True, capture_output=True, timeout=60)
    passwd = (tmp_path / "etc/passwd").read_text().splitlines()
    user = {line.split(":")[0]: line.split(":") for line in passwd}["radinfill"]
    assert int(user[2]) < 1000  # a system account
    assert user[5:] == ["/var/lib/radinfill", "/usr/sbin/nologin"]
    groups = {line.split(":")[0] for line in (tmp_path / "etc/group").read_text().splitlines()}
    assert "radinfill" in groups


def test_timer_starts_the_retraining_weekly() -> None:
    timer = (SYSTEMD / "radinfill-retrain.timer").read_text()
    calendar = re.search(r"^OnCalendar=(.+)$", timer, re.MULTILINE)
    assert calendar is not None
    done = _analyze("calendar", "--iterations=2", calendar.group(1), cwd=SYSTEMD)
    assert done.returncode == 0, done.stderr
    stamps = re.findall(r"\b(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) UTC", done.stdout)
    assert len(stamps) >= 2
    first, second = (datetime.fromisoformat(s) for s in stamps[-2:])
    assert (second - first).days == 7
    assert re.search(r"^Persistent=true$", timer, re.MULTILINE)
