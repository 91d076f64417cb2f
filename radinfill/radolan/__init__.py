"""RADOLAN codec: decode and encode DWD composites, read archives, grids and sites.

Public API: :func:`decode`, :func:`encode`, :func:`read`, :func:`read_one`, :func:`write`,
:func:`dumps`, :func:`dumps_tar`, :func:`analysis`, :func:`member_name`,
:func:`build_header`, :class:`Field`, :class:`RadolanError`,
:class:`Grid`, :func:`grid_for`.
"""

from radinfill.radolan.codec import Field, decode, encode
from radinfill.radolan.errors import RadolanError
from radinfill.radolan.grids import Grid, grid_for
from radinfill.radolan.header import Header
from radinfill.radolan.header import build as build_header
from radinfill.radolan.io import (
    analysis,
    dumps,
    dumps_tar,
    loads,
    member_name,
    read,
    read_one,
    sniff,
    write,
)

__all__ = [
    "Field",
    "Grid",
    "Header",
    "RadolanError",
    "analysis",
    "build_header",
    "decode",
    "dumps",
    "dumps_tar",
    "encode",
    "grid_for",
    "loads",
    "member_name",
    "read",
    "read_one",
    "sniff",
    "write",
]
