"""File names as text that every store accepts.

POSIX file names are bytes. Python hands a name that is not valid UTF-8 over as ``str`` with
lone surrogates (PEP 383), which SQLite, netCDF attributes and UTF-8 files refuse. A feed can
deliver such a name, so every name that goes into the ledger, a netCDF attribute, a sidecar or
a log passes through :func:`printable` first.
"""

from __future__ import annotations

import os

__all__ = ["printable"]


def printable(name: str | os.PathLike[str]) -> str:
    """``name`` as valid UTF-8 text, each undecodable byte written as ``\\xNN``.

    The same name always gives the same text, so the result serves as a key (the ledger's);
    a valid UTF-8 name comes back unchanged.
    """
    return os.fsencode(name).decode("utf-8", "backslashreplace")
