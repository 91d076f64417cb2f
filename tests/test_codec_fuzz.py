"""Property and fuzz tests of the RADOLAN codec (hypothesis).

Two kinds: bad input of every shape (truncated, mutated, arbitrary bytes, hostile containers)
raises :class:`RadolanError` and nothing else; valid products built from real headers with
random grids, values and flag bits decode and re-encode to the same bytes (and any amount
infilled into a real ODIM-HDF5 composite is stored as its rounded code).
"""

from __future__ import annotations

import bz2
import gzip
import io
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from radinfill.radolan import RadolanError, decode, encode, hdf5, read
from tests.radolan_samples import raw_product, shrink

TEMPLATES = {
    "RW": "dwdradar/tests/raa01-rw_10000-1907010950-dwd---bin_weatherRadolan",  # PR E-01
    "RY": "dwdradar/tests/raa01-ry_10000-1910182355-dwd---bin",  # PR E-02
    "RE": "wradlib-data/radvor/RE2210180700_000.gz",  # PR E-03, VS 5
    "YW": "dwdradar/tests/raa01-yw2017.002_10000-2006131525-dwd---bin",  # RADKLIM tokens
    "SF": "wradlib-data/showcase/raa01-sf_10000-1408102050-dwd---bin.gz",  # ST token
    "RV": "brightsky/tests/data/DE1200_RV2305081330.tar.bz2",  # 10-digit BY, VS 5
    "RX": "dwdradar/tests/raa01-rx_10000-1605290600-dwd---bin_Braunsbach",  # RVP6 bytes
}
TWO_BYTE = sorted(set(TEMPLATES) - {"RX"})
#: Valid-product properties decode and compare whole grids; bad input fails fast, so more runs.
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BAD_INPUT = settings(FUZZ, max_examples=600)

SECONDARY, NODATA, NEGATIVE, CLUTTER = 0x1000, 0x2000, 0x4000, 0x8000
NODATA_WORD = NODATA | 2500


@pytest.fixture(scope="module")
def real(samples: Path) -> dict[str, bytes]:
    """The template products, full size, raw bytes."""
    return {key: raw_product(samples / name) for key, name in TEMPLATES.items()}


@pytest.fixture(scope="module")
def small(real: dict[str, bytes]) -> dict[str, bytes]:
    """The templates cut down to valid 4 x 3 products."""
    return {key: shrink(data, 4, 3) for key, data in real.items()}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory for all examples of a test (hypothesis reuses module-scoped fixtures)."""
    return tmp_path_factory.mktemp("fuzz")


def _flags(choices: tuple[int, ...]) -> st.SearchStrategy[int]:
    return st.sets(st.sampled_from(choices)).map(sum)


#: A valid pixel word: 12-bit count with any of the secondary, negative and clutter bits.
VALID_WORD = st.builds(
    lambda count, flags: count | flags,
    st.integers(0, 4095),
    _flags((SECONDARY, NEGATIVE, CLUTTER)),
)
#: A no-data word as DWD writes it: the canonical 0x29C4 with secondary and clutter bits.
NODATA_WORDS = _flags((SECONDARY, CLUTTER)).map(lambda flags: NODATA_WORD | flags)
SHAPES = st.tuples(st.integers(1, 12), st.integers(1, 12))
#: Byte values, weighted towards what header numbers and separators are made of.
BYTES = st.one_of(st.sampled_from(b" 0123456789x<>,E+-\x03"), st.integers(0, 255))


# --- bad input -----------------------------------------------------------------------------------


@BAD_INPUT
@given(key=st.sampled_from(sorted(TEMPLATES)), fraction=st.floats(0, 1, exclude_max=True))
def test_truncated_real_product_raises(real: dict[str, bytes], key: str, fraction: float) -> None:
    data = real[key]
    with pytest.raises(RadolanError):
        decode(data[: int(fraction * len(data))])


@BAD_INPUT
@given(
    key=st.sampled_from(sorted(TEMPLATES)),
    edits=st.lists(st.tuples(st.integers(0, 10_000), BYTES), min_size=1, max_size=4),
)
def test_mutated_product_raises_or_decodes(
    small: dict[str, bytes], key: str, edits: list[tuple[int, int]]
) -> None:
    """Byte edits anywhere: refused, or decoded; header-only edits that decode must round-trip."""
    data = bytearray(small[key])
    for pos, value in edits:
        data[pos % len(data)] = value
    mutant = bytes(data)
    try:
        field = decode(mutant)
    except RadolanError:
        return
    assert field.values.shape == field.header.shape
    header_end = small[key].index(b"\x03")
    if all(pos % len(data) <= header_end for pos, _ in edits):
        assert encode(field) == mutant


@BAD_INPUT
@given(cut=st.floats(0, 1), tail=st.binary(max_size=2000), key=st.sampled_from(sorted(TEMPLATES)))
def test_arbitrary_bytes_after_part_of_a_real_header_raise(
    small: dict[str, bytes], cut: float, tail: bytes, key: str
) -> None:
    """Header cut anywhere before its ETX, then junk: never a product, always refused."""
    data = small[key]
    with pytest.raises(RadolanError):
        decode(data[: int(cut * data.index(b"\x03"))] + tail)


@BAD_INPUT
@given(
    kind=st.sampled_from(["gzip", "bz2", "tar", "hdf5", "gzip-of-junk", "bz2-of-junk"]),
    junk=st.binary(max_size=3000),
)
def test_arbitrary_container_bytes_raise(scratch: Path, kind: str, junk: bytes) -> None:
    data = {
        "gzip": b"\x1f\x8b" + junk,
        "bz2": b"BZh" + junk,
        "tar": junk[:257].ljust(257, b"\0") + b"ustar" + junk[257:],
        "hdf5": b"\x89HDF\r\n\x1a\n" + junk,
        "gzip-of-junk": gzip.compress(junk),
        "bz2-of-junk": bz2.compress(junk),
    }[kind]
    path = scratch / "input"
    path.write_bytes(data)
    with pytest.raises(RadolanError):
        read(path)


# --- valid products: decode then encode is the identity -----------------------------------------


@st.composite
def two_byte_products(
    draw: st.DrawFn, keys: list[str], words: st.SearchStrategy[int]
) -> tuple[str, np.ndarray]:
    """A template key and a random grid of pixel words drawn from ``words``."""
    key = draw(st.sampled_from(keys))
    shape = draw(SHAPES)
    grid = draw(hnp.arrays(np.uint16, shape, elements=words))
    return key, grid


@FUZZ
@given(case=two_byte_products(TWO_BYTE, st.one_of(VALID_WORD, NODATA_WORDS)))
def test_random_two_byte_products_round_trip(
    small: dict[str, bytes], case: tuple[str, np.ndarray]
) -> None:
    key, words = case
    data = shrink(small[key], *words.shape, payload=words.astype("<u2").tobytes())
    field = decode(data)
    assert encode(field) == data
    np.testing.assert_array_equal(field.nodata, (words & NODATA) != 0)
    np.testing.assert_array_equal(np.isnan(field.values), field.nodata)
    np.testing.assert_array_equal(field.secondary, (words & SECONDARY) != 0)
    np.testing.assert_array_equal(field.clutter, (words & CLUTTER) != 0)
    negative = ((words & NEGATIVE) != 0) & ~field.nodata
    np.testing.assert_array_equal(np.signbit(field.values) & ~field.nodata, negative)


@FUZZ
@given(case=two_byte_products(["RW"], st.one_of(VALID_WORD, NODATA_WORDS)))
def test_values_of_e01_products_lie_within_the_twelve_bit_range(
    small: dict[str, bytes], case: tuple[str, np.ndarray]
) -> None:
    _, words = case
    words = words & ~np.uint16(NEGATIVE)  # amounts: the sign bit is never set by DWD
    field = decode(shrink(small["RW"], *words.shape, payload=words.astype("<u2").tobytes()))
    valid = field.values[~field.nodata]
    assert np.all((valid >= 0) & (valid <= np.float32(409.5)))
    np.testing.assert_allclose(valid, (words[~field.nodata] & 0x0FFF) * 0.1, rtol=1e-6)


@FUZZ
@given(codes=SHAPES.flatmap(lambda shape: hnp.arrays(np.uint8, shape)))
def test_random_rvp6_products_round_trip(small: dict[str, bytes], codes: np.ndarray) -> None:
    data = shrink(small["RX"], *codes.shape, payload=codes.tobytes())
    field = decode(data)
    assert encode(field) == data
    np.testing.assert_array_equal(field.nodata, codes == 250)
    np.testing.assert_array_equal(field.clutter, codes == 249)
    valid = codes < 249
    np.testing.assert_allclose(field.values[valid], codes[valid] * 0.5 - 32.5, atol=1e-6)


@FUZZ
@given(
    values=SHAPES.flatmap(
        lambda shape: hnp.arrays(np.float32, shape, elements=st.floats(0, 1000, width=32))
    )
)
def test_encode_rounds_to_the_precision_and_saturates(
    small: dict[str, bytes], values: np.ndarray
) -> None:
    """Any amount survives encode/decode as round(v / 0.1) x 0.1, capped at 4095 counts."""
    template = decode(shrink(small["RW"], *values.shape, payload=bytes(2 * values.size)))
    field = template.replace(values=values)
    decoded = decode(encode(field))
    expected = np.minimum(np.rint(values.astype(np.float64) / 0.1), 4095) * 0.1
    np.testing.assert_allclose(decoded.values, expected, rtol=1e-6, atol=1e-6)
    assert not decoded.nodata.any()


@pytest.fixture(scope="module")
def odim_rw(samples: Path) -> bytes:
    """The real ODIM-HDF5 RW composite (uint16 codes, gain 0.1, no-data 65535)."""
    return (samples / "radolan-guide/hdf5/raa01-rw_10000-latest-dwd---bin.hdf5").read_bytes()


@settings(FUZZ, max_examples=40)
@given(
    amounts=hnp.arrays(
        np.float32,
        16,
        elements=st.floats(-1e6, 1e7, width=32) | st.sampled_from([np.inf, -np.inf, 6553.4]),
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_odim_infill_stores_rounded_codes_and_never_the_nodata_code(
    odim_rw: bytes, amounts: np.ndarray, seed: int
) -> None:
    """Any amount put into a hole is stored as round(v / 0.1) within 0..65534: saturating, not
    wrapping, and never 65535, which every ODIM reader would take for no-data."""
    field = decode(odim_rw)
    rows, cols = np.nonzero(field.nodata)
    pick = np.random.default_rng(seed).choice(rows.size, amounts.size, replace=False)
    hole = np.zeros_like(field.nodata)
    hole[rows[pick], cols[pick]] = True
    values = field.values.copy()
    values[rows[pick], cols[pick]] = amounts
    out = hdf5.encode(field.replace(values=values, nodata=field.nodata & ~hole))
    with h5py.File(io.BytesIO(out), "r") as h5:
        codes = h5["dataset1/data1/data"][()][::-1]
    expected = np.clip(np.rint(amounts.astype(np.float64) / 0.1), 0, 65534)
    np.testing.assert_array_equal(codes[rows[pick], cols[pick]], expected)
