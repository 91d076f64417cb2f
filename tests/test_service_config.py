"""The service configuration: defaults, path resolution, every problem at once, check-config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from radinfill import cli
from radinfill import config as config_module
from radinfill.daemon.service_config import ConfigError, ServiceConfig, load, parse
from tests.service_helpers import write_toml

REQUIRED = {
    "incoming": ["in"],
    "outgoing": "out",
    "state_dir": "state",
    "quarantine": "quarantine",
    "model": "baseline:advection",
}


def _parse(tmp_path: Path, **service: Any) -> ServiceConfig:
    return parse({"service": {**REQUIRED, **service}}, base=tmp_path)


def _problems(tmp_path: Path, document: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(document, base=tmp_path, source="svc.toml")
    assert str(caught.value).startswith("svc.toml: ")
    return caught.value.problems


def test_minimal_file_gets_the_documented_defaults_and_paths_relative_to_it(
    tmp_path: Path,
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    config = load(write_toml(etc / "svc.toml", {"service": REQUIRED}))
    assert config.incoming == (etc / "in",)
    assert (config.outgoing, config.state_dir) == (etc / "out", etc / "state")
    assert config.quarantine == etc / "quarantine"
    assert config.ledger_path == etc / "state" / "ledger.sqlite"
    assert config.model == "baseline:advection"  # a baseline is not a path
    for name in ("window", "max_context", "settle_s", "horizon_s", "watch", "patterns"):
        assert getattr(config, name) == ServiceConfig.__dataclass_fields__[name].default
    assert (config.metrics.address, config.metrics.port) == ("127.0.0.1", 9108)
    assert (config.log_format, config.log_level) == ("auto", "info")


def test_values_are_typed_and_a_single_incoming_path_is_a_list(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    config = _parse(
        tmp_path,
        incoming="/srv/in",
        model="models",
        patterns=["raa01-*"],
        window=4,
        max_context=8,
        settle_s=1,
        post_write_hook=["/bin/awk", "{{print}}", "{radolan}"],
    )
    assert config.incoming == (Path("/srv/in"),)
    assert config.model == str(tmp_path / "models")
    assert config.patterns == ("raa01-*",)
    assert (config.window, config.max_context) == (4, 8)
    assert config.settle_s == 1.0
    assert isinstance(config.settle_s, float)
    assert config.post_write_hook == ("/bin/awk", "{{print}}", "{radolan}")


def test_effective_configuration_loads_back_to_the_same(tmp_path: Path) -> None:
    config = _parse(tmp_path, products=["RY"], watch="polling", netcdf=False)
    again = load(write_toml(tmp_path / "effective.toml", config.effective()))
    assert again == config


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    document = {
        "service": {
            "incoming": ["in"],
            "outgoing": "in",
            "quarantine": "q",
            "model": "baseline:bidirectional",
            "window": 0,
            "watch": "sometimes",
            "colour": "blue",
        },
        "metrics": {"port": 70000, "address": "localhost"},
        "logging": {"level": "loud"},
        "extra": {},
    }
    problems = _problems(tmp_path, document)
    expected = [
        "unknown section [extra]",
        "unknown key service.colour",
        "service.state_dir is required",
        "service.model: 'bidirectional' is not a causal baseline",
        "service.window must be an integer >= 1",
        "service.watch must be one of auto, inotify, polling",
        f"service.outgoing ({tmp_path / 'in'}) and service.incoming ({tmp_path / 'in'}) are the "
        "same directory or one holds the other, symbolic links resolved: outputs would "
        "overwrite inputs and be read back as corrections",
        "metrics.address 'localhost' is not an IP address",
        "metrics.port must be an integer in 0..65535",
        "logging.level must be one of debug, info, warning, error",
    ]
    for line in expected:
        assert line in problems, (line, problems)
    assert len(problems) == len(expected)


def test_layouts_are_compared_with_symbolic_links_resolved(tmp_path: Path) -> None:
    """An outgoing directory that is a link to incoming, or lies inside it through a link."""
    (tmp_path / "in").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "in")
    for outgoing in ("alias", "alias/out"):
        with pytest.raises(ConfigError) as err:
            _parse(tmp_path, outgoing=outgoing)
        (problem,) = err.value.problems
        assert problem.startswith(f"service.outgoing ({tmp_path / outgoing}) and service.incoming")
        assert "symbolic links resolved" in problem


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"max_context": 4, "window": 6}, "service.max_context must be >= service.window"),
        ({"fallback": "bidirectional"}, "service.fallback must be causal"),
        ({"fallback": "kriging"}, "service.fallback must be one of"),
        ({"device": "tpu"}, "service.device must be auto, cpu, cuda or cuda:N"),
        ({"output_name": "{name}.{user}"}, "service.output_name may use"),
        ({"output_name": "{}-{name}"}, "service.output_name may use"),
        ({"output_name": "../{name}"}, "service.output_name must stay inside service.outgoing"),
        ({"output_name": "{name"}, "service.output_name: "),
        ({"quarantine": "in"}, "service.quarantine ("),
        ({"quarantine": "out/bad"}, "service.quarantine ("),
        ({"state_dir": "out"}, "service.state_dir ("),
        ({"incoming": ["out/in"]}, "service.outgoing ("),
        ({"settle_s": 5, "settle_timeout_s": 1}, "service.settle_timeout_s must be >= "),
        ({"settle_s": -1}, "service.settle_s must be a number >= 0"),
        ({"retry_backoff_s": 0}, "service.retry_backoff_s must be a number >= 0.1"),
        ({"netcdf": "yes"}, "service.netcdf must be true or false"),
        ({"patterns": "raa01-*"}, "service.patterns must be a list of strings"),
        ({"incoming": []}, "service.incoming must be a non-empty list of paths"),
        ({"window": True}, "service.window must be an integer >= 1"),
        ({"model": ""}, "service.model must be a path or baseline:NAME"),
        ({"model": "no-such-models"}, "service.model: "),
        ({"post_write_hook": ["awk", "{print}", "{radolan}"]}, "service.post_write_hook may"),
        ({"post_write_hook": ["notify", "{radolan"]}, "service.post_write_hook: '{radolan'"),
    ],
)
def test_each_rule_names_its_key(tmp_path: Path, changes: dict[str, Any], problem: str) -> None:
    problems = _problems(tmp_path, {"service": {**REQUIRED, **changes}})
    assert any(p.startswith(problem) for p in problems), problems


def test_device_accepts_a_cuda_index_and_train_section_is_left_to_retraining(
    tmp_path: Path,
) -> None:
    config = parse(
        {"service": {**REQUIRED, "device": "cuda:1"}, "train": {"anything": 1}}, base=tmp_path
    )
    assert config.device == "cuda:1"


def test_unreadable_and_invalid_files_are_one_problem_each(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[service\nincoming = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML") as caught:
        load(broken)
    assert len(caught.value.problems) == 1


def test_check_config_prints_the_effective_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_toml(tmp_path / "svc.toml", {"service": REQUIRED, "metrics": {"port": 0}})
    assert cli.main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "[service]" in out
    assert "[metrics]" in out
    assert "[logging]" in out
    assert f'outgoing = "{tmp_path / "out"}"' in out
    assert "port = 0" in out
    assert "horizon_s = 7200.0" in out  # a default, filled in


def test_invalid_config_exits_2_listing_each_problem_for_check_and_serve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_toml(
        tmp_path / "svc.toml", {"service": {**REQUIRED, "window": 0, "watch": "never"}}
    )
    for argv in (["check-config", str(path)], ["serve", "--config", str(path)]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.splitlines()
        assert f"{path}: service.window must be an integer >= 1" in err
        assert f"{path}: service.watch must be one of auto, inotify, polling" in err
    assert not (tmp_path / "state").exists()  # serve stopped before creating anything


def test_check_config_reads_the_file_once_and_lists_the_problems_of_every_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One file, one round: a bad service key, a bad [train] and a bad [retrain] value are
    all reported together, each on its own line naming the file."""
    path = write_toml(
        tmp_path / "all.toml",
        {
            "service": {**REQUIRED, "window": 0},
            "train": {"variant": "nonsense", "checkpoint_dir": "run"},
            "retrain": {"registry": "models", "checkpoint_root": "runs", "nproc": 0},
        },
    )
    reads: list[str] = []
    real = config_module.tomllib.loads
    monkeypatch.setattr(config_module.tomllib, "loads", lambda t: reads.append(t) or real(t))
    assert cli.main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(reads) == 1
    assert f"{path}: service.window must be an integer >= 1" in err
    assert any(line.startswith(f"{path}: train.variant 'nonsense'") for line in err)
    assert f"{path}: retrain.nproc must be >= 1, got 0" in err


def test_grids_are_a_table_of_sizes(tmp_path: Path) -> None:
    assert _parse(tmp_path, grids={"RW": "900x900"}).grids == {"RW": (900, 900)}
    assert _parse(tmp_path).grids == {}
    problems = _problems(tmp_path, {"service": {**REQUIRED, "grids": {"RW": "big", "RY": 9}}})
    assert problems == [
        "service.grids.RW must be ROWSxCOLS, got 'big'",
        "service.grids.RY must be ROWSxCOLS, got 9",
    ]
    assert _problems(tmp_path, {"service": {**REQUIRED, "grids": "900x900"}}) == [
        'service.grids must be a table such as { RW = "900x900" }'
    ]


def test_engine_options_are_configurable_and_checked(tmp_path: Path) -> None:
    settings = _parse(tmp_path, precision="bf16", threads=2, tile="256x256")
    assert settings.engine_options() == {"precision": "bf16", "threads": 2, "tile": (256, 256)}
    assert _parse(tmp_path).engine_options() == {"precision": "fp32", "threads": None, "tile": None}
    assert _problems(tmp_path, {"service": {**REQUIRED, "tile": "128x512"}}) == [
        "service.tile must exceed 128 px both ways"
    ]
    problems = _problems(
        tmp_path, {"service": {**REQUIRED, "precision": "fp8", "threads": -1, "tile": "big"}}
    )
    assert problems == [
        "service.threads must be an integer >= 0",
        "service.precision must be one of fp32, bf16, fp16",
        "service.tile must be ROWSxCOLS or empty, got 'big'",
    ]


def test_engine_options_reach_the_loaded_network(tmp_path: Path) -> None:
    from radinfill.daemon import live_model
    from radinfill.model import save_checkpoint
    from tests.test_checkpoint import tiny_model

    meta = {"product": "RY", "interval_minutes": 5}
    checkpoint = save_checkpoint(tiny_model(), tmp_path / "ckpt", meta)
    settings = _parse(tmp_path, model=str(checkpoint), precision="bf16", tile="256x256")
    loaded = live_model.load(settings.model, device="cpu", engine=settings.engine_options())
    assert (loaded.engine.precision, loaded.engine.tile) == ("bf16", (256, 256))
