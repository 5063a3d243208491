"""The few-values path of the codec (engine.normalization_values, binding.encrypt_values and
decrypt_values) against the batch path: the same bytes, values and errors for every type, NULLs,
values of other Python types, out-of-range values, malformed plaintexts and tampered cells."""

from __future__ import annotations

import datetime as dt
import math
import uuid
import zoneinfo
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

binding = pytest.importorskip(
    "enclave.binding", reason="the native codec (enclave.binding) is not built"
)

import engine.client.codec as codec  # noqa: E402
from engine.client.cek_cache import ColumnKey  # noqa: E402
from engine.errors import CellAuthenticationError, DataError, Error  # noqa: E402
from engine.normalization import denormalize, normalize  # noqa: E402
from engine.normalization_values import denormalize_values, normalize_values  # noqa: E402
from engine.types import parse_sql_type  # noqa: E402

KEY = bytes(range(32))

# Values of the column's own Python type: the fast path must take every one (REAL aside).
NATIVE: dict[str, st.SearchStrategy[Any]] = {
    "BOOLEAN": st.booleans(),
    "TINYINT": st.integers(-128, 127),
    "SMALLINT": st.integers(-(2**15), 2**15 - 1),
    "INTEGER": st.integers(-(2**31), 2**31 - 1),
    "BIGINT": st.integers(-(2**63), 2**63 - 1),
    "UTINYINT": st.integers(0, 255),
    "USMALLINT": st.integers(0, 2**16 - 1),
    "UINTEGER": st.integers(0, 2**32 - 1),
    "UBIGINT": st.integers(0, 2**63 - 1),
    "DOUBLE": st.floats(),
    "DECIMAL(20,5)": st.integers(-(10**20) + 1, 10**20 - 1).map(lambda u: Decimal(f"{u}E-5")),
    "DECIMAL(38,0)": st.integers(-(10**38) + 1, 10**38 - 1),
    "DATE": st.dates(),
    "TIME": st.times(),
    "TIME(3)": st.times(),
    "TIMESTAMP": st.datetimes(),
    "TIMESTAMP(0)": st.datetimes(),
    "TIMESTAMPTZ": st.datetimes(
        min_value=dt.datetime(1, 1, 2),
        max_value=dt.datetime(9999, 12, 30),
        timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=-5, minutes=-30))]),
    ),
    "VARCHAR": st.text(),
    "NVARCHAR": st.text(),
    "BLOB": st.binary(),
    "UUID": st.uuids(),
}
TYPES = sorted(NATIVE) + ["REAL", "DECIMAL(5,2)"]
# Valid values of every type, for the plaintexts the decrypt tests start from.
VALID = {
    **NATIVE,
    "REAL": st.floats(width=32, allow_nan=False, allow_infinity=False),
    "DECIMAL(5,2)": st.decimals(min_value=-999, max_value=999, places=2),
}

# Anything else a caller may pass: other Python types, values out of range, odd decimals.
OTHER = st.one_of(
    st.integers(-(2**70), 2**70),
    st.booleans(),
    st.floats(),
    st.text(max_size=8),
    st.sampled_from(["\ud800", "12:30:00", "2024-02-29", "1.5", "not a value", "x\x00y"]),
    st.sampled_from(["01234567-89ab-cdef-0123-456789abcdef", str(uuid.UUID(int=7))]),
    st.binary(max_size=8),
    st.builds(bytearray, st.binary(max_size=4)),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.decimals(min_value=-(10**40), max_value=10**40, places=3),
    st.sampled_from(
        [Decimal("1E+5"), Decimal("-0.000"), Decimal("9.995"), Decimal("123.455"), Decimal("1E-40")]
    ),
    st.sampled_from(
        [
            dt.datetime(2024, 3, 1, 12, 30, tzinfo=dt.UTC),
            dt.datetime(2024, 3, 1, 12, 30, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
            dt.datetime(2024, 3, 1, 12, 30, 1, 999999),
            dt.date(2024, 3, 1),
            dt.time(23, 59, 59, 999999),
            dt.time(1, 2, 3, tzinfo=dt.UTC),
            dt.timedelta(days=1),
        ]
    ),
    st.uuids(),
)


def _batch_normalize(values: list[Any], declared: str) -> tuple[str, Any]:
    try:
        return "ok", normalize(values, declared, column="t.c").to_pylist()
    except DataError as error:
        return "error", str(error)


@pytest.mark.parametrize("declared", TYPES)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_normalize_values_agrees_with_the_batch_path(declared: str, data: st.DataObject) -> None:
    values = data.draw(
        st.lists(st.none() | NATIVE.get(declared, OTHER) | OTHER, min_size=1, max_size=4)
    )
    fast = normalize_values(values, parse_sql_type(declared))
    if fast is not None:  # when it answers, it answers what the batch path does
        assert _batch_normalize(values, declared) == ("ok", fast)


@pytest.mark.parametrize("declared", sorted(NATIVE))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_the_fast_path_takes_every_value_of_the_columns_own_type(
    declared: str, data: st.DataObject
) -> None:
    values = data.draw(st.lists(st.none() | NATIVE[declared], min_size=1, max_size=4))
    fast = normalize_values(values, parse_sql_type(declared))
    assert fast is not None
    assert _batch_normalize(values, declared) == ("ok", fast)


def _batch_denormalize(plaintexts: list[bytes | None], declared: str) -> tuple[str, Any]:
    try:
        return "ok", denormalize(pa.array(plaintexts, pa.binary()), declared, column="t.c")
    except DataError as error:
        return "error", str(error)


def _same_array(left: pa.Array, right: pa.Array) -> bool:
    if left.type != right.type:
        return False
    if pa.types.is_floating(left.type):  # NaN != NaN
        return [repr(v) for v in left.to_pylist()] == [repr(v) for v in right.to_pylist()]
    return left.equals(right)


@pytest.mark.parametrize("declared", TYPES)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_denormalize_values_agrees_with_the_batch_path(declared: str, data: st.DataObject) -> None:
    sql_type = parse_sql_type(declared)
    width = sql_type.normalized_width
    good = normalize(data.draw(st.lists(VALID[declared], max_size=3)), declared).to_pylist()
    malformed = st.binary(max_size=20) | (
        st.binary(min_size=width, max_size=width) if width else st.binary(max_size=6)
    )
    plaintexts = good + data.draw(st.lists(st.none() | malformed, max_size=3))
    plaintexts = data.draw(st.permutations(plaintexts))
    fast = denormalize_values(plaintexts, sql_type)
    outcome = _batch_denormalize(plaintexts, declared)
    if fast is None:
        # Only a failure goes to the batch path, and DECIMAL's other lengths (JDBC, tedious).
        other_decimal_lengths = sql_type.name == "DECIMAL" and any(
            p is not None and len(p) != 17 for p in plaintexts
        )
        assert outcome[0] == "error" or other_decimal_lengths
        return
    assert outcome[0] == "ok"
    assert _same_array(pa.array(fast, type=sql_type.arrow_type), outcome[1])


@pytest.mark.parametrize("declared", sorted(NATIVE))
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_encrypt_values_gives_the_batch_paths_cells(declared: str, data: st.DataObject) -> None:
    values = data.draw(st.lists(st.none() | NATIVE[declared], max_size=4))
    fast = codec.encrypt_values(values, KEY, "DETERMINISTIC", declared, column="t.c")
    assert fast == codec.encrypt_column(values, KEY, "DETERMINISTIC", declared).to_pylist()
    randomized = codec.encrypt_values(values, KEY, "RANDOMIZED", declared)
    assert [c is None for c in randomized] == [v is None for v in values]
    decrypted = codec.decrypt_column(randomized, KEY, declared).to_pylist()
    expected = codec.decrypt_column(fast, KEY, declared).to_pylist()
    assert [repr(v) for v in decrypted] == [repr(v) for v in expected]


def _outcome(call: Any) -> tuple[str, Any]:
    try:
        return "ok", call()
    except Error as error:
        return type(error).__name__, str(error)


@pytest.fixture
def batch_only(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A function that runs a call with the few-values path switched off."""

    def run(call: Any) -> tuple[str, Any]:
        with monkeypatch.context() as patch:
            patch.setattr(codec, "SMALL_VALUES", -1)
            return _outcome(call)

    return run


@pytest.mark.parametrize("declared", TYPES)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_encrypt_errors_are_the_batch_paths(declared: str, data: st.DataObject) -> None:
    values = data.draw(st.lists(st.none() | OTHER, min_size=1, max_size=3))
    fast = _outcome(
        lambda: codec.encrypt_values(values, KEY, "DETERMINISTIC", declared, column="t.c")
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(codec, "SMALL_VALUES", -1)
        batch = _outcome(
            lambda: codec.encrypt_values(values, KEY, "DETERMINISTIC", declared, column="t.c")
        )
    assert fast == batch


@pytest.mark.parametrize("declared", TYPES)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_decrypt_results_and_errors_are_the_batch_paths(declared: str, data: st.DataObject) -> None:
    """Cells of malformed plaintexts (a value of another type, bytes that do not decode) and
    tampered cells: the small path returns or raises exactly what the batch path does."""
    plaintexts = data.draw(st.lists(st.none() | st.binary(max_size=20), min_size=1, max_size=4))
    good = normalize(data.draw(st.lists(VALID[declared], max_size=2)), declared).to_pylist()
    key = binding.CellKey(KEY)
    try:
        cells = binding.encrypt_values(key, good + plaintexts, deterministic=False)
    finally:
        key.close()
    if data.draw(st.booleans()):  # tamper with one cell
        index = data.draw(
            st.sampled_from([i for i, c in enumerate(cells) if c is not None] or [None])
        )
        if index is not None:
            cell = bytearray(cells[index])
            cell[data.draw(st.integers(0, len(cell) - 1))] ^= 1 << data.draw(st.integers(0, 7))
            cells[index] = bytes(cell)
    array = pa.array(cells, pa.binary())
    fast = _outcome(lambda: codec.decrypt_column(array, KEY, declared, column="t.c"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(codec, "SMALL_VALUES", -1)
        batch = _outcome(lambda: codec.decrypt_column(array, KEY, declared, column="t.c"))
    assert fast[0] == batch[0]
    if fast[0] == "ok":
        assert _same_array(fast[1], batch[1])
    else:
        assert fast[1] == batch[1]


def test_a_tampered_cell_raises_the_fixed_error_on_the_small_path() -> None:
    cells = codec.encrypt_values(["Ada"], KEY, "RANDOMIZED", "VARCHAR")
    tampered = bytearray(cells[0] or b"")
    tampered[-1] ^= 1
    with pytest.raises(CellAuthenticationError) as raised:
        codec.decrypt_column(pa.array([bytes(tampered)], pa.binary()), KEY, "VARCHAR")
    assert str(raised.value) == str(CellAuthenticationError())


def test_a_short_cell_and_a_wrong_key_raise_on_the_small_path() -> None:
    cells = codec.encrypt_values([5], KEY, "RANDOMIZED", "INTEGER")
    with pytest.raises(CellAuthenticationError):
        codec.decrypt_column(pa.array([b"\x01" * 40], pa.binary()), KEY, "INTEGER")
    with pytest.raises(CellAuthenticationError):
        codec.decrypt_column(pa.array(cells, pa.binary()), bytes(32), "INTEGER")


def test_a_column_key_whose_native_key_was_wiped_still_works() -> None:
    """The cache may wipe its native key while a statement holds the ColumnKey (TTL, close):
    the codec then loads the key for that one call."""
    native = binding.CellKey(KEY)
    column_key = ColumnKey(KEY, native)
    cells = codec.encrypt_values(["x", None], column_key, "DETERMINISTIC", "VARCHAR")
    native.close()
    assert codec.encrypt_values(["x", None], column_key, "DETERMINISTIC", "VARCHAR") == cells
    array = pa.array(cells * 20, pa.binary())  # the batch path too
    assert codec.decrypt_column(array, column_key, "VARCHAR").to_pylist() == ["x", None] * 20


def test_nan_and_negative_zero_take_the_batch_paths_bytes() -> None:
    for value in (math.nan, -math.nan, -0.0, math.inf):
        assert (
            normalize_values([value], parse_sql_type("DOUBLE"))
            == normalize([value], "DOUBLE").to_pylist()
        )


def test_the_modules_examples_hold() -> None:
    import doctest

    import engine.normalization_values

    assert doctest.testmod(engine.normalization_values).failed == 0


@pytest.mark.parametrize(
    ("declared", "plaintext"),
    [
        ("VARCHAR", b"\xed\xa0\x80"),  # a surrogate written as UTF-8
        ("VARCHAR", b"\xc0\x80"),  # overlong
        ("VARCHAR", b"\xf4\x90\x80\x80"),  # past U+10FFFF
        ("NVARCHAR", b"\x00\xd8"),  # a lone high surrogate
        ("NVARCHAR", b"a\x00b"),  # odd length
        ("DECIMAL(5,2)", b"\x02" + bytes(16)),  # bad sign byte
        ("DECIMAL(5,2)", b"\x01" + (100_000).to_bytes(16, "little")),  # past the precision
        ("BOOLEAN", (2).to_bytes(8, "little")),
        ("TINYINT", (128).to_bytes(8, "little")),
        ("DATE", (3_652_059).to_bytes(3, "little")),
        ("TIME", (864_000_000_000).to_bytes(5, "little")),
        ("TIMESTAMPTZ", bytes(8) + (841).to_bytes(2, "little")),
        ("UUID", bytes(15)),
    ],
)
def test_malformed_plaintexts_go_to_the_batch_path_which_raises(
    declared: str, plaintext: bytes
) -> None:
    assert denormalize_values([plaintext], parse_sql_type(declared)) is None
    assert _batch_denormalize([plaintext], declared)[0] == "error"
