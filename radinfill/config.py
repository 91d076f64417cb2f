"""The one TOML configuration file: read once, every section checked, every problem reported.

One file configures the service (``[service]``, ``[metrics]``, ``[logging]``, read by
:mod:`radinfill.daemon.service_config`), training (``[train]``,
:mod:`radinfill.train.train_config`) and scheduled retraining (``[retrain]``,
:mod:`radinfill.train.retrain`). Each part parses its own sections from the one
:class:`Document`; :func:`check` runs every part's parser on it and raises one
:class:`ConfigError` listing every problem of every section, one line each, so an operator
fixes a file in one round. Relative paths are relative to the file (:attr:`Document.base`).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "Document", "check", "read"]


class ConfigError(ValueError):
    """An invalid configuration; ``problems`` lists every problem found, one line each."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(f"{source}: " + "; ".join(self.problems))


@dataclass(frozen=True)
class Document:
    """A parsed configuration file.

    Attributes
    ----------
    source
        Where it came from (the path), for messages.
    base
        The directory relative paths are taken from.
    sections
        The TOML tables by name.
    """

    source: str
    base: Path
    sections: Mapping[str, Any]

    def table(self, name: str) -> Mapping[str, Any] | None:
        """The table ``[name]``, or None when the file has none."""
        value = self.sections.get(name)
        return value if isinstance(value, Mapping) else None


def read(path: str | os.PathLike[str]) -> Document:
    """Read and parse a configuration file (the only place that does).

    Raises
    ------
    ConfigError
        If the file cannot be read or is not valid TOML.
    """
    path = Path(path)
    try:
        sections = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(str(path), [f"cannot read: {err.strerror or err}"]) from None
    except UnicodeDecodeError as err:
        raise ConfigError(str(path), [f"not UTF-8 text: {err}"]) from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(str(path), [f"not valid TOML: {err}"]) from None
    return Document(str(path), path.absolute().parent, sections)


def check(
    document: Document,
    parsers: Mapping[str, Callable[[Document], Any]],
    required: Collection[str] = (),
) -> dict[str, Any]:
    """Every part's settings from ``document``: ``parsers`` maps a section to the function
    that parses it (each raises :class:`ConfigError`); sections the file does not have are
    skipped unless ``required`` (then their parser says what is missing).

    Raises
    ------
    ConfigError
        Listing the problems of every section together.
    """
    problems: list[str] = []
    parsed: dict[str, Any] = {}
    for section, parse in parsers.items():
        if section not in required and document.table(section) is None:
            continue
        try:
            parsed[section] = parse(document)
        except ConfigError as err:
            problems += err.problems
    if problems:
        raise ConfigError(document.source, problems)
    return parsed
