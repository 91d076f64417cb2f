"""The service configuration: the ``[service]``, ``[metrics]`` and ``[logging]`` TOML sections.

One file configures the service (and, in its ``[train]`` section, retraining). Every problem
is reported at once, one line each, so an operator fixes a file in one round::

    [service]
    incoming = ["/srv/radolan/incoming"]     # watched directories (not recursive)
    patterns = ["raa01-*"]                    # file-name globs taken from them
    products = ["RY", "RW", "YW"]             # product ids processed (empty: every amount product)
    outgoing = "/srv/radolan/infilled"
    output_name = "{name}"                    # also {product}, {stem}, {time:%Y%m%d%H%M}
    output_mode = "0644"                      # outputs' file mode (no x bits, never o+w)
    state_dir = "/var/lib/radinfill"
    quarantine = "/var/lib/radinfill/quarantine"
    model = "/var/lib/radinfill/models"       # registry, release, checkpoint or baseline:NAME
    device = "auto"                           # auto | cpu | cuda | cuda:N
    precision = "fp32"                        # network: fp32 | bf16 | fp16 (half: CUDA only)
    threads = 0                               # network: CPU threads (0: one per core)
    tile = ""                                 # network: "ROWSxCOLS" tiles ("": whole crops)
    window = 6                                # fields of context the model sees
    max_context = 24                          # fields kept for a long outage (advection source)
    fallback = "advection_boundary"           # baseline when the engine fails
    forecast_members = "analysis"             # of a forecast bundle: analysis | all
    grids = { RW = "900x900" }                # expected grid per product (default: the first
                                              # one processed, kept in the ledger)
    late_radar_wait_s = 0                     # hold a holed field this long for a correction
    horizon_s = 7200                          # corrections older than this are not reprocessed
    watch = "auto"                            # auto | inotify | polling
    poll_interval_s = 5
    settle_s = 2                              # stable size+mtime this long (polling)
    settle_timeout_s = 120                    # give up on a file that never completes
    reconcile_interval_s = 60
    retry_backoff_s = 60                      # first retry of a failed product; doubles to 1 h
    netcdf = true
    sidecar = true
    latest_link = true
    post_write_hook = []                      # argv, e.g. ["/usr/local/bin/notify", "{radolan}"]
    shadow_interval_s = 600                   # quality estimate cadence (0 = off)
    retention_days = 0                        # prune the ledger (0 = keep)

    [metrics]
    address = "127.0.0.1"
    port = 9108

    [logging]
    format = "auto"                           # auto | json | console
    level = "info"

Relative paths are relative to the configuration file.

``output_name`` must give a relative path inside ``outgoing`` (checked on a sample here and on
every product: an input whose name would leave ``outgoing`` is quarantined). Directories the
service creates get mode 0755 (outputs) or 0750 (state, quarantine) whatever the umask;
``output_mode`` is the mode of the RADOLAN, netCDF and sidecar files, an octal string or a TOML
octal integer (``0o640``), never executable and never writable by others.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from radinfill.config import ConfigError, Document, read
from radinfill.radolan.grids import parse_size

__all__ = [
    "ConfigError",
    "MetricsConfig",
    "PipelineSettings",
    "ServiceConfig",
    "from_document",
    "load",
    "parse",
]

_WATCH_MODES = ("auto", "inotify", "polling")
#: Members of a forecast bundle (DWD's ``composite_rv_*.tar``) that are infilled: the analysis
#: (lead 0) only, the forecasts passed on byte for byte; or every member with holes.
_FORECAST_MEMBERS = ("analysis", "all")
#: Precisions of the network's forward pass (:data:`radinfill.model.engine.PRECISIONS`; the
#: engine's module loads the inference stack, SciPy and OpenCV: the configuration is checked
#: without it).
_PRECISIONS = ("fp32", "bf16", "fp16")
#: Pixels by which the engine's tiles overlap (its default); a tile must exceed twice that.
_TILE_OVERLAP = 64
_LOG_FORMATS = ("auto", "json", "console")
_LOG_LEVELS = ("debug", "info", "warning", "error")
#: Directories that must neither be one nor hold one another, and what would go wrong.
_APART = (
    ("outgoing", "incoming", "outputs would overwrite inputs and be read back as corrections"),
    ("quarantine", "incoming", "quarantined files would be read again"),
    ("quarantine", "outgoing", "bad inputs would be published under product names"),
    ("state_dir", "outgoing", "the ledger would be published and outputs could overwrite it"),
    ("state_dir", "incoming", "the ledger and lock would lie among the inputs"),
)
_NAME_FIELDS = {"name", "stem", "product", "time"}
#: Product time of the sample an ``output_name`` is tried on.
_SAMPLE_TIME = datetime(2025, 6, 1, 12, 50, tzinfo=UTC)
#: Fields of ``post_write_hook`` arguments: the outputs just written.
_HOOK_FIELDS = {"radolan", "netcdf", "sidecar"}
#: Sections a service file may have; [train] and [retrain] belong to retraining and are not
#: checked here.
_SECTIONS = {"service", "metrics", "logging", "train", "retrain"}


@dataclass(frozen=True)
class MetricsConfig:
    """Where the Prometheus endpoint listens (loopback by default: exposing it is a choice)."""

    address: str = "127.0.0.1"
    port: int = 9108


@dataclass(frozen=True)
class PipelineSettings:
    """The part of ``[service]`` the per-file pipeline reads (:meth:`ServiceConfig.pipeline`);
    the window, writer, ledger and model get their own values where they are built."""

    outgoing: Path
    quarantine: Path
    products: tuple[str, ...]
    grids: Mapping[str, tuple[int, int]]
    forecast_members: str
    output_name: str
    late_radar_wait_s: float
    settle_timeout_s: float
    latest_link: bool
    post_write_hook: tuple[str, ...]


@dataclass(frozen=True)
class ServiceConfig:
    """The effective service configuration (see the module docstring for the meaning)."""

    incoming: tuple[Path, ...]
    outgoing: Path
    state_dir: Path
    quarantine: Path
    model: str
    patterns: tuple[str, ...] = ("*",)
    products: tuple[str, ...] = ()
    output_name: str = "{name}"
    output_mode: int = 0o644
    device: str = "auto"
    precision: str = "fp32"
    threads: int = 0
    tile: str = ""
    window: int = 6
    max_context: int = 24
    fallback: str = "advection_boundary"
    forecast_members: str = "analysis"
    grids: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    late_radar_wait_s: float = 0.0
    horizon_s: float = 7200.0
    watch: str = "auto"
    poll_interval_s: float = 5.0
    settle_s: float = 2.0
    settle_timeout_s: float = 120.0
    reconcile_interval_s: float = 60.0
    retry_backoff_s: float = 60.0
    netcdf: bool = True
    sidecar: bool = True
    latest_link: bool = True
    post_write_hook: tuple[str, ...] = ()
    shadow_interval_s: float = 600.0
    retention_days: float = 0.0
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    log_format: str = "auto"
    log_level: str = "info"

    def pipeline(self) -> PipelineSettings:
        """The pipeline's section of this configuration."""
        names = (f.name for f in dataclasses.fields(PipelineSettings))
        return PipelineSettings(**{name: getattr(self, name) for name in names})

    def engine_options(self) -> dict[str, Any]:
        """Keyword options of a network's :class:`~radinfill.model.engine.InfillEngine`."""
        return {
            "precision": self.precision,
            "threads": self.threads or None,
            "tile": parse_size(self.tile) if self.tile else None,
        }

    @property
    def ledger_path(self) -> Path:
        """The SQLite ledger in the state directory."""
        return self.state_dir / "ledger.sqlite"

    def effective(self) -> dict[str, Any]:
        """The configuration as TOML-like sections of plain values (``check-config`` prints it)."""
        values = {
            f.name: _plain(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name not in ("metrics", "log_format", "log_level")
        }
        values["output_mode"] = f"{self.output_mode:04o}"
        values["grids"] = {product: f"{r}x{c}" for product, (r, c) in self.grids.items()}
        return {
            "service": values,
            "metrics": {"address": self.metrics.address, "port": self.metrics.port},
            "logging": {"format": self.log_format, "level": self.log_level},
        }


def load(path: str | os.PathLike[str]) -> ServiceConfig:
    """Read and validate a service configuration file.

    Raises
    ------
    ConfigError
        Listing every problem (unreadable file, invalid TOML, unknown or missing keys, bad
        values), each naming the key.
    """
    return from_document(read(path))


def from_document(document: Document) -> ServiceConfig:
    """The service's sections of the configuration file (see :func:`parse`)."""
    return parse(document.sections, base=document.base, source=document.source)


def parse(document: Mapping[str, Any], *, base: Path, source: str = "<config>") -> ServiceConfig:
    """Validate a parsed TOML document into a :class:`ServiceConfig` (see :func:`load`)."""
    problems: list[str] = []
    for name in sorted(set(document) - _SECTIONS):
        problems.append(f"unknown section [{name}]")
    service = _table(document, "service", problems)
    metrics = _table(document, "metrics", problems)
    logging = _table(document, "logging", problems)
    fields = {f.name: f for f in dataclasses.fields(ServiceConfig)}
    settable = set(fields) - {"metrics", "log_format", "log_level"}
    for key in sorted(set(service) - settable):
        problems.append(f"unknown key service.{key}")
    for key in sorted(set(metrics) - {"address", "port"}):
        problems.append(f"unknown key metrics.{key}")
    for key in sorted(set(logging) - {"format", "level"}):
        problems.append(f"unknown key logging.{key}")

    merged = _service_values(service, settable, problems, base)
    _check_semantics(merged, problems)
    address = metrics.get("address", MetricsConfig.address)
    port = metrics.get("port", MetricsConfig.port)
    _check_metrics(address, port, problems)
    log_format = logging.get("format", "auto")
    log_level = logging.get("level", "info")
    if log_format not in _LOG_FORMATS:
        problems.append(f"logging.format must be one of {', '.join(_LOG_FORMATS)}")
    if log_level not in _LOG_LEVELS:
        problems.append(f"logging.level must be one of {', '.join(_LOG_LEVELS)}")
    if problems:
        raise ConfigError(source, problems)
    return ServiceConfig(
        **merged,
        metrics=MetricsConfig(address=address, port=port),
        log_format=log_format,
        log_level=log_level,
    )


def _service_values(
    service: Mapping[str, Any], settable: set[str], problems: list[str], base: Path
) -> dict[str, Any]:
    """The ``[service]`` values, typed, with defaults for the keys not given."""
    check = _Checker(service, problems, base)
    values: dict[str, Any] = {
        "incoming": check.paths("incoming"),
        "outgoing": check.path("outgoing"),
        "state_dir": check.path("state_dir"),
        "quarantine": check.path("quarantine"),
        "model": check.model("model"),
    }
    readers = {
        **dict.fromkeys(("patterns", "products", "post_write_hook"), check.strings),
        **dict.fromkeys(("window", "max_context"), check.integer),
        "threads": lambda key: check.integer(key, minimum=0),
        **dict.fromkeys(
            [k for k in settable if k.endswith("_s")] + ["retention_days"], check.number
        ),
        "retry_backoff_s": lambda key: check.number(key, minimum=0.1),  # 0 would spin
        **dict.fromkeys(("netcdf", "sidecar", "latest_link"), check.boolean),
        **dict.fromkeys(
            ("output_name", "device", "fallback", "watch", "forecast_members", "precision", "tile"),
            check.string,
        ),
        "output_mode": check.file_mode,
        "grids": check.grids,
    }
    values |= {key: read(key) for key, read in readers.items() if key in service}
    defaults = ServiceConfig.__dataclass_fields__
    given = {k: v for k, v in values.items() if v is not None}
    return {
        k: given[k] if k in given else _default(defaults[k])
        for k in settable
        if k in given or _has(defaults[k])
    }


def _check_semantics(values: Mapping[str, Any], problems: list[str]) -> None:
    """Cross-field rules: things a type check cannot see."""
    from radinfill.model import baselines

    if values.get("max_context", 24) < values.get("window", 6):
        problems.append("service.max_context must be >= service.window")
    if values.get("watch", "auto") not in _WATCH_MODES:
        problems.append(f"service.watch must be one of {', '.join(_WATCH_MODES)}")
    if values.get("precision", "fp32") not in _PRECISIONS:
        problems.append(f"service.precision must be one of {', '.join(_PRECISIONS)}")
    if values.get("tile"):
        try:
            small = min(parse_size(values["tile"])) <= 2 * _TILE_OVERLAP
        except ValueError:
            problems.append(f"service.tile must be ROWSxCOLS or empty, got {values['tile']!r}")
        else:
            if small:
                problems.append(f"service.tile must exceed {2 * _TILE_OVERLAP} px both ways")
    if values.get("forecast_members", "analysis") not in _FORECAST_MEMBERS:
        problems.append(f"service.forecast_members must be one of {', '.join(_FORECAST_MEMBERS)}")
    if values.get("fallback", "advection_boundary") not in baselines.list_methods():
        problems.append(f"service.fallback must be one of {', '.join(baselines.list_methods())}")
    elif not baselines.is_causal(values.get("fallback", "advection_boundary")):
        problems.append("service.fallback must be causal (it runs on the current field)")
    device = values.get("device", "auto")
    if device not in ("auto", "cpu", "cuda") and not _is_cuda_index(device):
        problems.append("service.device must be auto, cpu, cuda or cuda:N")
    _check_locations(values, problems)
    _check_hook(values.get("post_write_hook", ()), problems)


def _check_hook(argv: Sequence[str], problems: list[str]) -> None:
    """Hook arguments may use the output paths only (literal braces doubled): an argument
    that does not format would fail every product after its outputs were written."""
    for part in argv:
        try:
            used = {f for _, f, _, _ in string.Formatter().parse(part) if f is not None}
        except ValueError as err:
            problems.append(f"service.post_write_hook: {part!r}: {err}")
            continue
        if used - _HOOK_FIELDS:
            problems.append(
                f"service.post_write_hook may use {{{'}, {'.join(sorted(_HOOK_FIELDS))}}} only "
                f"(double literal braces), got {part!r}"
            )


def _check_locations(values: Mapping[str, Any], problems: list[str]) -> None:
    """Output name template and directories: outputs must never land in the inputs."""
    name = values.get("output_name", "{name}")
    if isinstance(name, str):
        try:
            used = {f for _, f, _, _ in string.Formatter().parse(name) if f is not None}
        except ValueError as err:
            problems.append(f"service.output_name: {err}")
        else:
            if used - _NAME_FIELDS:
                problems.append(
                    f"service.output_name may use {{{'}, {'.join(sorted(_NAME_FIELDS))}}} only"
                )
            elif problem := _name_problem(name):
                problems.append(f"service.output_name {problem}")
    places = {
        "incoming": tuple(values.get("incoming", ())),
        **{key: (values[key],) for key in ("outgoing", "quarantine", "state_dir") if key in values},
    }
    for key, other, why in _APART:
        clash = [
            (a, b) for a in places.get(key, ()) for b in places.get(other, ()) if _overlap(a, b)
        ]
        for a, b in clash:
            problems.append(
                f"service.{key} ({a}) and service.{other} ({b}) are the same directory or one "
                f"holds the other, symbolic links resolved: {why}"
            )
    if values.get("settle_timeout_s", 120.0) < values.get("settle_s", 2.0):
        problems.append("service.settle_timeout_s must be >= service.settle_s")


def _name_problem(template: str) -> str | None:
    """Why ``template`` cannot name outputs, tried on a sample product (an absolute path, a
    ``..`` or empty component, also one a ``{time:...}`` format writes; a bad format spec);
    None if it can. Every product's name is checked again when it is written."""
    from radinfill.daemon import outputs

    sample = "raa01-rw_10000-2506011250-dwd---bin"
    try:
        outputs.output_name(template, name=sample, stem=sample, product="RW", time=_SAMPLE_TIME)
    except outputs.OutputPathError:
        return "must stay inside service.outgoing"
    except ValueError as err:
        return f"does not format: {err}"
    return None


def _check_metrics(address: Any, port: Any, problems: list[str]) -> None:
    if not isinstance(address, str):
        problems.append("metrics.address must be a string")
    else:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            problems.append(f"metrics.address {address!r} is not an IP address")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        problems.append("metrics.port must be an integer in 0..65535")


class _Checker:
    """Typed reads of ``[service]`` keys that record a problem instead of raising."""

    def __init__(self, table: Mapping[str, Any], problems: list[str], base: Path) -> None:
        self.table, self.problems, self.base = table, problems, base

    def _get(self, key: str, required: bool) -> Any:
        if key not in self.table:
            if required:
                self.problems.append(f"service.{key} is required")
            return None
        return self.table[key]

    def path(self, key: str) -> Path | None:
        value = self._get(key, True)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            self.problems.append(f"service.{key} must be a path (string)")
            return None
        return _resolve(self.base, value)

    def paths(self, key: str) -> tuple[Path, ...] | None:
        value = self._get(key, True)
        if value is None:
            return None
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            self.problems.append(f"service.{key} must be a non-empty list of paths")
            return None
        return tuple(_resolve(self.base, v) for v in value)

    def model(self, key: str) -> str | None:
        value = self._get(key, True)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            self.problems.append(f"service.{key} must be a path or baseline:NAME")
            return None
        from radinfill.model import baselines

        if (name := baselines.spec_method(value)) is not None:
            if name not in baselines.list_methods() or not baselines.is_causal(name):
                self.problems.append(f"service.model: {name!r} is not a causal baseline")
            return value
        path = _resolve(self.base, value)
        if not path.exists():
            self.problems.append(f"service.{key}: {path} does not exist")
        return str(path)

    def grids(self, key: str) -> dict[str, tuple[int, int]] | None:
        """A table of product id -> ``"ROWSxCOLS"``."""
        value = self.table[key]
        if not isinstance(value, Mapping):
            self.problems.append(f'service.{key} must be a table such as {{ RW = "900x900" }}')
            return None
        grids = {}
        for product, size in value.items():
            try:
                rows, cols = parse_size(size) if isinstance(size, str) else (0, 0)
            except ValueError:
                rows, cols = 0, 0
            if rows < 1 or cols < 1:
                self.problems.append(f"service.{key}.{product} must be ROWSxCOLS, got {size!r}")
            grids[str(product)] = (rows, cols)
        return grids

    def strings(self, key: str) -> tuple[str, ...] | None:
        value = self.table[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problems.append(f"service.{key} must be a list of strings")
            return None
        return tuple(value)

    def string(self, key: str) -> str | None:
        value = self.table[key]
        if not isinstance(value, str):
            self.problems.append(f"service.{key} must be a string")
            return None
        return value

    def integer(self, key: str, *, minimum: int = 1) -> int | None:
        value = self.table[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            self.problems.append(f"service.{key} must be an integer >= {minimum}")
            return None
        return value

    def number(self, key: str, *, minimum: float = 0.0) -> float | None:
        value = self.table[key]
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or value < minimum:
            self.problems.append(f"service.{key} must be a number >= {minimum:g}")
            return None
        return float(value)

    def file_mode(self, key: str) -> int | None:
        """An octal mode ("0644" or 0o644) without execute bits, not writable by others."""
        value = self.table[key]
        if isinstance(value, str):
            try:
                value = int(value, 8)
            except ValueError:
                value = None
        ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0o777
        if not ok or value & 0o113:  # an execute bit, or writable by others
            self.problems.append(
                f"service.{key} must be an octal file mode without execute bits and not "
                f'writable by others, e.g. "0644", got {self.table[key]!r}'
            )
            return None
        return value

    def boolean(self, key: str) -> bool | None:
        value = self.table[key]
        if not isinstance(value, bool):
            self.problems.append(f"service.{key} must be true or false")
            return None
        return value


def _table(document: Mapping[str, Any], name: str, problems: list[str]) -> Mapping[str, Any]:
    value = document.get(name, {})
    if not isinstance(value, dict):
        problems.append(f"[{name}] must be a table")
        return {}
    return value


def _has(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _resolve(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path)


def _overlap(a: Path, b: Path) -> bool:
    """Whether two directories are one or one lies inside the other once symbolic links (of
    the parts that exist) are resolved."""
    first, second = Path(a).resolve(), Path(b).resolve()
    return first.is_relative_to(second) or second.is_relative_to(first)


def _is_cuda_index(device: str) -> bool:
    prefix, _, index = device.partition(":")
    return prefix == "cuda" and index.isdigit()


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value
