"""The monitoring assets: Prometheus alert rules and the Grafana dashboard.

The rules are checked and unit-tested by ``promtool`` (Debian package ``prometheus``; .ci/run
installs it). Every PromQL expression of the rules and the dashboard is checked against the
metrics the code really exports (the service's :class:`radinfill.daemon.telemetry.Metrics`
registry and the training job's :func:`radinfill.train.run_metrics.registry`): metric names, label
names and the ``outcome`` values of ``radinfill_products_total``, so a renamed metric breaks
this test instead of silently emptying a panel or disarming an alert.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from radinfill.daemon.pipeline import Outcome
from radinfill.daemon.telemetry import Metrics
from radinfill.train import run_metrics
from tests.conftest import REPO

PROMETHEUS = REPO / "deploy" / "prometheus"
DASHBOARD = REPO / "deploy" / "grafana" / "radinfill.json"
#: Labels Prometheus attaches to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})
#: Series Prometheus synthesises for every scrape target.
SCRAPE_SERIES = {"up": frozenset()}
#: Dashboard rows (operations.md §5.5).
ROWS = ["Freshness", "Latency", "Throughput and outcomes", "Quality", "Process", "Training"]
#: Values the checked selectors may use for a label, where the code defines the set.
LABEL_VALUES = {("radinfill_products_total", "outcome"): frozenset(o.value for o in Outcome)}

_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"offset", "bool", "inf", "nan"}
)
_STRING = r'"(?:[^"\\]|\\.)*"'
_NAME = r"[A-Za-z_:][A-Za-z0-9_:]*"
_SELECTOR = re.compile(rf"(?<![\w:.$])({_NAME})?\s*\{{((?:[^{{}}\"]|{_STRING})*)\}}")
_MATCHER = re.compile(rf"\s*([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*({_STRING})\s*,?")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_BARE = re.compile(rf"(?<![\w:.$]){_NAME}(?![\w:])(?!\s*\()")
_LABEL_VALUES = re.compile(rf"^label_values\(\s*(.+?)\s*,\s*({_NAME})\s*\)$")


# -- the metric catalogue ---------------------------------------------------------------------


def _exposed(registry: CollectorRegistry, labels: Mapping[str, frozenset[str]]) -> dict:
    """Exposition name -> label names, for every family of ``registry``."""
    suffixes = {
        "counter": ("_total",),
        "gauge": ("",),
        "info": ("_info",),
        "histogram": ("_bucket", "_count", "_sum"),
        "summary": ("", "_count", "_sum"),
    }
    names: dict[str, frozenset[str]] = {}
    for family in registry.collect():
        own = labels.get(family.name) or frozenset(
            key for sample in family.samples for key in sample.labels
        )
        for suffix in suffixes[family.type]:
            extra = {"le"} if suffix == "_bucket" else set()
            names[family.name + suffix] = own | extra
    return names


def catalogue() -> dict[str, frozenset[str]]:
    """Every series name the service, its process and the training job export, with labels."""
    metrics = Metrics()
    declared = {
        m._name: frozenset(m._labelnames)
        for m in vars(metrics).values()
        if isinstance(m, MetricWrapperBase)
    }
    info_labels = {
        "radinfill_model": {"release", "variant", "sha256", "device", "runtime", "code_version"}
    }
    declared |= {name: frozenset(labels) for name, labels in info_labels.items()}
    run = run_metrics.RunMetrics(
        steps=1,
        finished=True,
        duration_seconds=1.0,
        loss=0.1,
        samples_per_second=1.0,
        scores={"rmse": 1.0},
    )
    training = run_metrics.registry(run, success_time=1.0)
    return {
        **_exposed(metrics.registry, declared),
        **_exposed(training, {}),
        **SCRAPE_SERIES,
    }


@pytest.fixture(scope="module")
def known() -> dict[str, frozenset[str]]:
    return catalogue()


def test_catalogue_holds_what_the_code_exports(known: dict[str, frozenset[str]]) -> None:
    assert known["radinfill_products_total"] == {"product", "outcome"}
    assert known["radinfill_end_to_end_latency_seconds_bucket"] == {"product", "le"}
    assert known["radinfill_model_info"] == {
        "release",
        "variant",
        "sha256",
        "device",
        "runtime",
        "code_version",
    }
    assert known["radinfill_train_score"] == {"score"}
    assert "radinfill_train_last_success_timestamp_seconds" in known
    assert "process_resident_memory_bytes" in known
    assert "radinfill_products" not in known  # counters are exported with _total only


# -- PromQL checks ----------------------------------------------------------------------------


def problems(expr: str, known: Mapping[str, frozenset[str]]) -> list[str]:
    """What is wrong with the metric references of a PromQL expression (empty: nothing).

    Grafana variables (``$instance``, ``$__rate_interval``) are left in place: they stand in
    label values and range durations, which are not checked.
    """
    found: list[str] = []
    for name, body in _referenced(expr):
        if name is not None and name not in known:
            found.append(f"unknown metric {name}")
            continue
        allowed = TARGET_LABELS | (known[name] if name is not None else frozenset())
        for label, op, value in _MATCHER.findall(body):
            if label == "__name__":
                continue
            if name is not None and label not in allowed:
                found.append(f"{name} has no label {label}")
            values = LABEL_VALUES.get((name or "", label))
            if values is not None and op in ("=", "!="):
                if json.loads(value) not in values:
                    found.append(f"{name}: {label} is never {value}")
            elif values is not None:
                pattern = re.compile(json.loads(value))
                if not any(pattern.fullmatch(v) for v in values):
                    found.append(f"{name}: no {label} matches {value}")
    return found


def _referenced(expr: str) -> Iterator[tuple[str | None, str]]:
    """(metric name or None, label matcher text) of every selector in ``expr``."""
    rest = expr
    for match in _SELECTOR.finditer(expr):
        yield match.group(1), match.group(2)
    rest = _SELECTOR.sub(lambda m: " ", rest)
    rest = re.sub(_STRING, " ", rest)
    rest = _GROUPING.sub(" ", rest)
    rest = re.sub(r"\[[^\]]*\]", " ", rest)
    rest = re.sub(r"\$\{?\w+\}?", " ", rest)
    for name in _BARE.findall(rest):
        if name not in _KEYWORDS:
            yield name, ""


def test_promql_references_are_found() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, product) (rate(radinfill_x_bucket{a="1", '
        'b=~"x|y"}[5m]))) > 3 * 60 or absent(radinfill_y) unless on (job) up offset 1h '
        "and $__rate_interval"
    )
    assert list(_referenced(expr)) == [
        ("radinfill_x_bucket", 'a="1", b=~"x|y"'),
        ("radinfill_y", ""),
        ("up", ""),
    ]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("rate(radinfill_nope_total[5m])", ["unknown metric radinfill_nope_total"]),
        ('radinfill_queue_depth{product="RY"}', ["radinfill_queue_depth has no label product"]),
        (
            'radinfill_products_total{outcome="error"}',
            ['radinfill_products_total: outcome is never "error"'],
        ),
        (
            'radinfill_products_total{outcome=~"error|oops"}',
            ['radinfill_products_total: no outcome matches "error|oops"'],
        ),
        ('radinfill_products_total{job="radinfill", outcome=~"failed|quarantined"}', []),
        ("time() - radinfill_train_last_success_timestamp_seconds > 8 * 86400", []),
    ],
)
def test_problems_are_reported(
    known: dict[str, frozenset[str]], expr: str, expected: list[str]
) -> None:
    assert problems(expr, known) == expected


# -- alert rules ------------------------------------------------------------------------------


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool is not None, (
        "promtool is missing: apt-get install --no-install-recommends prometheus (see .ci/run)"
    )
    return subprocess.run(
        [tool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120, check=False
    )


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_promtool_accepts_the_rules() -> None:
    done = _promtool("check", "rules", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in done.stdout


def test_promtool_unit_tests_pass() -> None:
    done = _promtool("test", "rules", "alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_unit_tests_fire_the_key_alerts() -> None:
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text(encoding="utf-8"))
    fired = {
        case["alertname"]
        for test in tests["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert {"RadinfillNoProduct", "RadinfillQuarantine"} <= fired


def test_every_alert_is_labelled_and_described(known: dict[str, frozenset[str]]) -> None:
    rules = _rules()
    assert len({rule["alert"] for rule in rules}) == len(rules)
    for rule in rules:
        assert rule["alert"].startswith("Radinfill"), rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
        assert problems(rule["expr"], known) == [], rule["alert"]


# -- dashboard --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _queries(dashboard: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and annotation."""
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for annotation in dashboard["annotations"]["list"]:
        if "expr" in annotation:
            yield f"annotation {annotation['name']}", annotation["expr"]


def test_dashboard_has_the_rows_in_order(dashboard: dict[str, Any]) -> None:
    rows = [panel["title"] for panel in dashboard["panels"] if panel["type"] == "row"]
    assert rows == ROWS
    assert dashboard["uid"] == "radinfill"


def test_every_panel_queries_through_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "instance", "product"} <= variables
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(set(ids)) == len(ids)
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for target in [panel, *panel["targets"]]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert all(target["expr"].strip() for target in panel["targets"]), panel["title"]


def test_panels_tile_the_grid(dashboard: dict[str, Any]) -> None:
    taken: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_dashboard_queries_reference_existing_metrics(
    dashboard: dict[str, Any], known: dict[str, frozenset[str]]
) -> None:
    queries = list(_queries(dashboard))
    assert len(queries) > 30
    for where, expr in queries:
        assert problems(expr, known) == [], where


def test_template_variables_query_existing_labels(
    dashboard: dict[str, Any], known: dict[str, frozenset[str]]
) -> None:
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = _LABEL_VALUES.match(variable["query"]["query"])
        assert match is not None, variable["name"]
        selector, label = match.groups()
        assert problems(selector, known) == [], variable["name"]
        (metric, _), *_ = _referenced(selector)
        assert metric is not None
        assert label in known[metric] | TARGET_LABELS, variable["name"]


def test_dashboard_covers_the_service_metrics(
    dashboard: dict[str, Any], known: dict[str, frozenset[str]]
) -> None:
    """Every radinfill_* metric family shows up somewhere (build info aside)."""
    used = {name for _, expr in _queries(dashboard) for name, _ in _referenced(expr) if name}
    families = {re.sub(r"_(bucket|count|sum)$", "", n) for n in known if n.startswith("radinfill")}
    shown = {re.sub(r"_(bucket|count|sum)$", "", n) for n in used}
    assert families - shown == {"radinfill_build_info"}
