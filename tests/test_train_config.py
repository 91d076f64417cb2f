"""The ``[train]`` section of the TOML file: paths, strict keys, overrides, metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from radinfill.train import train_config as config
from radinfill.train.train_config import DataConfig, PushConfig

ROOT = Path(__file__).resolve().parents[1]

MINIMAL = """
[train]
variant = "baseline"
checkpoint_dir = "runs/a"
"""


def write(directory: Path, text: str) -> Path:
    path = directory / "train.toml"
    path.write_text(text)
    return path


def test_relative_paths_are_resolved_against_the_file(tmp_path: Path) -> None:
    here = tmp_path / "conf"
    here.mkdir()
    path = write(
        here,
        MINIMAL
        + """log_path = "logs/run.jsonl"
[train.data]
radolan = ["../archive", "/abs/radolan"]
rates = "fmi"
[train.metrics]
textfile = "metrics/train.prom"
""",
    )
    settings = config.load(path)
    assert settings.run["checkpoint_dir"] == here / "runs" / "a"
    assert settings.run["log_path"] == here / "logs" / "run.jsonl"
    assert settings.data.radolan == (here / ".." / "archive", Path("/abs/radolan"))
    assert settings.data.rates == (here / "fmi",)
    assert settings.data.mask_archives == settings.data.radolan
    assert settings.metrics == PushConfig(textfile=here / "metrics" / "train.prom")


def test_defaults_without_optional_tables(tmp_path: Path) -> None:
    settings = config.load(write(tmp_path, MINIMAL))
    assert settings.data == DataConfig()
    assert settings.metrics is None
    # the network window follows the data window unless set
    assert settings.run["hparams"] == {"window": DataConfig().window}
    trained = settings.train_config()
    assert trained.variant == "baseline"
    assert trained.log_file == tmp_path / "runs" / "a" / "train.jsonl"


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ("epoch = 3\n", r"\[train\]: epoch"),
        ("[train.data]\ncrops = 96\n", r"\[train.data\]: crops"),
        ("[train.metrics]\npush_gateway = 'h:9091'\n", r"\[train.metrics\]: push_gateway"),
    ],
)
def test_unknown_keys_are_rejected_by_name(tmp_path: Path, extra: str, named: str) -> None:
    path = write(tmp_path, MINIMAL + extra)
    with pytest.raises(ValueError, match=rf"train.toml: unknown key\(s\) in {named}"):
        config.load(path)


def test_overrides_use_dotted_keys_and_toml_values(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "[train.data]\ncrop = 128\n")
    settings = config.load(
        path,
        [
            "epochs=3",
            "lr=2e-4",
            "grad_clip=0.5",
            "data.crop=96",
            "data.synthetic_presets=['mixed']",
            "hparams.widths=[8, 16]",
            "metrics.pushgateway=gateway.example:9091",  # not TOML: taken as a string
            'checkpoint_dir="elsewhere"',
        ],
    )
    assert settings.run["epochs"] == 3
    assert settings.run["lr"] == pytest.approx(2e-4)
    assert settings.run["grad_clip"] == 0.5
    assert settings.data.crop == 96
    assert settings.data.synthetic_presets == ("mixed",)
    assert settings.run["hparams"]["widths"] == [8, 16]
    assert settings.metrics == PushConfig(pushgateway="gateway.example:9091")
    assert settings.run["checkpoint_dir"] == tmp_path / "elsewhere"


def test_override_does_not_modify_the_section() -> None:
    section = {"variant": "baseline", "data": {"crop": 128}}
    changed = config.override(section, ["data.crop=64"])
    assert changed["data"]["crop"] == 64
    assert section["data"]["crop"] == 128


@pytest.mark.parametrize("item", ["epochs", "=3", "variant.sub=1"])
def test_malformed_overrides_are_errors(item: str) -> None:
    with pytest.raises(ValueError, match="override"):
        config.override({"variant": "baseline"}, [item])


def test_window_mismatch_between_network_and_data(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "[train.hparams]\nwindow = 4\n[train.data]\nwindow = 6\n")
    with pytest.raises(ValueError, match=r"hparams.window = 4 differs from train.data.window = 6"):
        config.load(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[train]\ncheckpoint_dir = "x"\n', "train.variant is required"),
        ('[train]\nvariant = "baseline"\n', "train.checkpoint_dir is required"),
        ('[train]\nvariant = "resnet"\ncheckpoint_dir = "x"\n', "'resnet' is not one of"),
        ("[service]\nincoming = 'x'\n", "no \\[train\\] section"),
        ("[train\n", "not valid TOML"),
        (MINIMAL + "[train.data]\ncrop = 0\n", "crop must be >= 1"),
        (MINIMAL + "batch_size = 0\n", "batch_size must be >= 1"),
        (MINIMAL + "data = 3\n", "train.data must be a table"),
        (MINIMAL + "[train.metrics]\ntextfile = 'train.txt'\n", "must end in .prom"),
        (MINIMAL + "[train.metrics]\npushgateway = ''\n", "pushgateway must be a non-empty"),
    ],
)
def test_bad_sections_name_the_file_and_the_problem(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=message) as error:
        config.load(path)
    assert str(error.value).startswith(f"{path}: ")


def test_the_shipped_default_configuration_parses() -> None:
    settings = config.load(ROOT / "deploy" / "train-default.toml")
    assert settings.run["variant"] == "lstm_attention"
    assert settings.data.window == settings.run["hparams"]["window"]
    assert (
        settings.train_config().checkpoint_dir == ROOT / "deploy" / ".." / "out" / "train-default"
    )
