"""Every enclave operator against plaintext DuckDB on the same values, for every type code.

Values are normalized and encrypted by the client codec (engine.encrypt_column), the operators
run in the enclave, and DuckDB computes the expected answer from the plaintext: comparisons,
BETWEEN, IN, LIKE, dense ranks, groups and aggregates. NULLs, empty batches, batches of one and
batches that span several of the enclave's decrypt chunks are all covered.
"""

from __future__ import annotations

import datetime
import decimal
import os
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enclave import binding
from engine.client.codec import decrypt_column, encrypt_column
from engine.errors import OperationalError, ProgrammingError
from tests.support.enclave_harness import COMPARISONS, Client

CEK = os.urandom(32)
OTHER_CEK = os.urandom(32)
SETTINGS = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass(frozen=True)
class Kind:
    sql_type: str  # the declared type, for normalization
    duckdb_type: str  # the plaintext oracle's column type
    type_code: int
    values: st.SearchStrategy[Any]
    numeric: bool = False


_ZONES = st.sampled_from(
    [
        datetime.UTC,
        datetime.timezone(datetime.timedelta(hours=5, minutes=30)),
        datetime.timezone(datetime.timedelta(hours=-8)),
    ]
)
# Text that reaches every ordering corner: ASCII, Latin-1, U+E000..U+FFFF (above surrogates in
# UTF-16 code units but below astral characters in code points) and astral characters.
_TEXT = st.text(
    alphabet=st.sampled_from(["a", "b", "B", "é", "\ue000", "\uffee", "😀", "𝄞", " "]), max_size=6
)

KINDS = [
    Kind("BIGINT", "BIGINT", binding.TYPE_INT64, st.integers(-(2**63), 2**63 - 1), True),
    Kind(
        "REAL",
        "FLOAT",
        binding.TYPE_FLOAT32,
        st.floats(-1e6, 1e6, width=32, allow_nan=False, allow_infinity=False),
        True,
    ),
    Kind(
        "DOUBLE",
        "DOUBLE",
        binding.TYPE_FLOAT64,
        st.floats(-1e9, 1e9, allow_nan=False, allow_infinity=False),
        True,
    ),
    Kind(
        "DECIMAL(18,4)",
        "DECIMAL(18,4)",
        binding.TYPE_DECIMAL,
        st.decimals(-(10**13), 10**13, places=4, allow_nan=False, allow_infinity=False),
        True,
    ),
    Kind("DATE", "DATE", binding.TYPE_DATE, st.dates(datetime.date(1, 1, 1))),
    Kind("TIME", "TIME", binding.TYPE_TIME, st.times()),
    Kind(
        "TIMESTAMP",
        "TIMESTAMP",
        binding.TYPE_DATETIME2,
        st.datetimes(datetime.datetime(1900, 1, 1), datetime.datetime(2100, 1, 1)),
    ),
    Kind(
        "TIMESTAMPTZ",
        "TIMESTAMPTZ",
        binding.TYPE_DATETIMEOFFSET,
        st.datetimes(
            datetime.datetime(1900, 1, 2), datetime.datetime(2100, 1, 1), timezones=_ZONES
        ),
    ),
    Kind("VARCHAR", "VARCHAR", binding.TYPE_UTF8, _TEXT),
    Kind("NVARCHAR", "VARCHAR", binding.TYPE_UTF16LE, _TEXT),
    Kind("BLOB", "BLOB", binding.TYPE_BYTES, st.binary(max_size=5)),
    Kind("UUID", "UUID", binding.TYPE_GUID, st.uuids()),
]
KIND_IDS = [kind.sql_type for kind in KINDS]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    session = Client(tmp_path_factory.mktemp("platform"))
    yield session
    session.close()


@pytest.fixture(scope="module")
def oracle() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")
    yield connection
    connection.close()


def column(kind: Kind, values: list[Any], cek: bytes = CEK) -> pa.Array:
    return encrypt_column(values, cek, "RANDOMIZED", kind.sql_type)


def cell(kind: Kind, value: Any) -> bytes:
    result = column(kind, [value])[0].as_py()
    assert isinstance(result, bytes)
    return result


def prefixed(*cells: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in cells)


def load(
    oracle: duckdb.DuckDBPyConnection, kind: Kind, left: list[Any], right: list[Any] | None = None
) -> None:
    oracle.execute("DROP TABLE IF EXISTS t")
    oracle.execute(f"CREATE TABLE t (i INTEGER, v {kind.duckdb_type}, w {kind.duckdb_type})")
    rows = [(i, value, None if right is None else right[i]) for i, value in enumerate(left)]
    if rows:
        oracle.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)


def expected(
    oracle: duckdb.DuckDBPyConnection, expression: str, parameters: list[Any]
) -> list[Any]:
    rows = oracle.execute(f"SELECT {expression} FROM t ORDER BY i", parameters).fetchall()
    return [row[0] for row in rows]


def values_with_nulls(kind: Kind, min_size: int = 0) -> st.SearchStrategy[list[Any]]:
    # A small pool makes equal values (and so ties, groups and IN hits) likely.
    return st.lists(kind.values, min_size=1, max_size=5).flatmap(
        lambda pool: st.lists(
            st.one_of(st.none(), st.sampled_from(pool)), min_size=min_size, max_size=24
        )
    )


# ---- comparisons, BETWEEN, IN, RANK, GROUP -------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_comparisons_ranks_and_groups_match_duckdb(
    kind: Kind, client: Client, oracle: duckdb.DuckDBPyConnection
) -> None:
    @SETTINGS
    @given(
        values=values_with_nulls(kind),
        constants=st.lists(kind.values, min_size=3, max_size=3),
        shuffle=st.randoms(use_true_random=False),
    )
    def check(values: list[Any], constants: list[Any], shuffle: random.Random) -> None:
        # Sometimes compare with a value that is in the column.
        present = [value for value in values if value is not None]
        if present:
            constants[0] = shuffle.choice(present)
        other = values[:]
        shuffle.shuffle(other)
        comparand, low, high = constants
        cells, right = column(kind, values), column(kind, other)
        comparand_cell = cell(kind, comparand)
        between = prefixed(cell(kind, low), cell(kind, high))
        in_items = [comparand, low, high]
        in_list = struct.pack("<I", 3) + prefixed(*(cell(kind, item) for item in in_items))
        code = kind.type_code
        grants = [(1, op, code, comparand_cell) for op, _ in COMPARISONS]
        grants += [(1, op, code, b"") for op, _ in COMPARISONS]
        grants += [
            (1, binding.OP_BETWEEN, code, between),
            (1, binding.OP_IN, code, in_list),
            (1, binding.OP_RANK, code, b""),
            (1, binding.OP_GROUP, code, b""),
        ]
        query = client.begin("SELECT ...", [(1, CEK)], grants)
        try:
            load(oracle, kind, values, other)
            cast = f"CAST(? AS {kind.duckdb_type})"
            for op, sql in COMPARISONS:
                got = binding.enclave_compare(query, 1, code, op, comparand_cell, cells)
                assert got.to_pylist() == expected(oracle, f"v {sql} {cast}", [comparand]), sql
                pair = binding.enclave_compare(query, 1, code, op, b"", cells, right)
                assert pair.to_pylist() == expected(oracle, f"v {sql} w", []), sql
            got = binding.enclave_compare(query, 1, code, binding.OP_BETWEEN, between, cells)
            want = expected(oracle, f"v BETWEEN {cast} AND {cast}", [low, high])
            assert got.to_pylist() == want
            got = binding.enclave_compare(query, 1, code, binding.OP_IN, in_list, cells)
            want = expected(oracle, f"v IN ({cast}, {cast}, {cast})", in_items)
            assert got.to_pylist() == want
            dense = "CASE WHEN v IS NULL THEN NULL ELSE DENSE_RANK() OVER (ORDER BY v) - 1 END"
            want = expected(oracle, dense, [])
            assert binding.enclave_rank(query, 1, code, cells).to_pylist() == want
            assert binding.enclave_group(query, 1, code, cells).to_pylist() == want
        finally:
            binding.end_query(query)

    check()


@pytest.mark.parametrize("kind", [KINDS[8], KINDS[9]], ids=["VARCHAR", "NVARCHAR"])
def test_text_orders_by_code_point(
    kind: Kind, client: Client, oracle: duckdb.DuckDBPyConnection
) -> None:
    # UTF-16 code units put astral characters (surrogates, D800..DFFF) below U+E000..U+FFFF;
    # code point order, DuckDB's, puts them above.
    values = ["\ue000", "😀", "\uffee", "a", "", "é", "𝄞", "\ud7ff", "a\ue000", "a😀"]
    query = client.begin("ORDER", [(1, CEK)], [(1, binding.OP_RANK, kind.type_code, b"")])
    try:
        got = binding.enclave_rank(query, 1, kind.type_code, column(kind, values))
    finally:
        binding.end_query(query)
    load(oracle, kind, values)
    assert got.to_pylist() == expected(oracle, "DENSE_RANK() OVER (ORDER BY v) - 1", [])


# ---- LIKE ---------------------------------------------------------------------------------------

_LIKE_TEXT = st.text(alphabet=st.sampled_from(["a", "b", "%", "_", "!", "é", "😀"]), max_size=7)


@pytest.mark.parametrize("kind", [KINDS[8], KINDS[9]], ids=["VARCHAR", "NVARCHAR"])
def test_like_matches_duckdb(kind: Kind, client: Client, oracle: duckdb.DuckDBPyConnection) -> None:
    @SETTINGS
    @given(
        values=st.lists(st.one_of(st.none(), _LIKE_TEXT), max_size=12),
        pattern=_LIKE_TEXT,
        escape=st.sampled_from([None, "!"]),
    )
    def check(values: list[str | None], pattern: str, escape: str | None) -> None:
        if escape is not None:
            pattern = pattern.rstrip(escape)  # a pattern may not end with a dangling escape
        constant = struct.pack("<I", 0 if escape is None else ord(escape)) + cell(kind, pattern)
        query = client.begin("LIKE", [(1, CEK)], [(1, binding.OP_LIKE, kind.type_code, constant)])
        try:
            got = binding.enclave_compare(
                query, 1, kind.type_code, binding.OP_LIKE, constant, column(kind, values)
            )
            load(oracle, kind, values)
            if escape is None:
                want = expected(oracle, "v LIKE ?", [pattern])
            else:
                want = expected(oracle, "v LIKE ? ESCAPE ?", [pattern, escape])
            assert got.to_pylist() == want
        finally:
            binding.end_query(query)

    check()


def test_like_pattern_ending_in_its_escape_is_refused(client: Client) -> None:
    kind = KINDS[8]
    constant = struct.pack("<I", ord("!")) + cell(kind, "ab!")
    query = client.begin("LIKE", [(1, CEK)], [(1, binding.OP_LIKE, kind.type_code, constant)])
    try:
        with pytest.raises(ProgrammingError):
            binding.enclave_compare(
                query, 1, kind.type_code, binding.OP_LIKE, constant, column(kind, ["ab"])
            )
    finally:
        binding.end_query(query)


def test_like_backtracking_stays_linear_in_practice(client: Client) -> None:
    kind = KINDS[8]
    pattern = "%a" * 20 + "%b"
    constant = struct.pack("<I", 0) + cell(kind, pattern)
    query = client.begin("LIKE", [(1, CEK)], [(1, binding.OP_LIKE, kind.type_code, constant)])
    try:
        got = binding.enclave_compare(
            query, 1, kind.type_code, binding.OP_LIKE, constant, column(kind, ["a" * 3000])
        )
        assert got.to_pylist() == [False]
    finally:
        binding.end_query(query)


# ---- aggregates ---------------------------------------------------------------------------------


def result_type(kind: Kind, operator: int) -> str:
    if operator == binding.OP_COUNT_DISTINCT:
        return "BIGINT"
    if operator in (binding.OP_MIN, binding.OP_MAX):
        return kind.sql_type
    if operator == binding.OP_AVG or kind.type_code in (
        binding.TYPE_FLOAT32,
        binding.TYPE_FLOAT64,
    ):
        return "DOUBLE"
    scale = 4 if kind.type_code == binding.TYPE_DECIMAL else 0
    return f"DECIMAL(38,{scale})"


def close_enough(got: Any, want: Any) -> bool:
    if isinstance(want, float) and isinstance(got, float):
        return bool(got == pytest.approx(want, rel=1e-9, abs=1e-6))
    return bool(got == want)  # aware datetimes compare as instants, whatever their zone


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_aggregates_match_duckdb(
    kind: Kind, client: Client, oracle: duckdb.DuckDBPyConnection
) -> None:
    operators = [
        (binding.OP_MIN, "MIN(v)"),
        (binding.OP_MAX, "MAX(v)"),
        (binding.OP_COUNT_DISTINCT, "COUNT(DISTINCT v)"),
    ]
    if kind.numeric:
        operators += [(binding.OP_SUM, "SUM(v)"), (binding.OP_AVG, "AVG(v)")]

    @SETTINGS
    @given(
        values=values_with_nulls(kind),
        group_count=st.integers(0, 4),
        data=st.data(),
    )
    def check(values: list[Any], group_count: int, data: st.DataObject) -> None:
        group_ids = data.draw(
            st.lists(
                st.integers(-1, group_count - 1) if group_count else st.just(-1),
                min_size=len(values),
                max_size=len(values),
            )
        )
        cells = column(kind, values)
        grants = [(1, op, kind.type_code, b"") for op, _ in operators]
        query = client.begin("AGG", [(1, CEK)], grants)
        try:
            load(oracle, kind, values)
            oracle.execute("ALTER TABLE t ADD COLUMN g INTEGER")
            for i, group in enumerate(group_ids):
                oracle.execute("UPDATE t SET g = ? WHERE i = ?", [group, i])
            for op, sql in operators:
                result = binding.enclave_aggregate(
                    query, 1, kind.type_code, op, cells, group_ids, group_count, 4
                )
                assert len(result) == group_count
                plain = decrypt_column(result, CEK, result_type(kind, op)).to_pylist()
                rows = oracle.execute(
                    f"SELECT {sql} FROM range(?) r(g) LEFT JOIN t USING (g) GROUP BY g ORDER BY g",
                    [group_count],
                ).fetchall()
                want = [row[0] for row in rows]
                if op == binding.OP_AVG and kind.type_code == binding.TYPE_DECIMAL:
                    want = [None if w is None else float(w) for w in want]
                if op in (binding.OP_SUM,) and kind.type_code == binding.TYPE_INT64:
                    want = [None if w is None else decimal.Decimal(w) for w in want]
                assert all(close_enough(g, w) for g, w in zip(plain, want, strict=True)), sql
                # MIN and MAX are fresh encryptions, never a copy of an input cell.
                inputs = set(cells.to_pylist())
                assert not inputs & {c for c in result.to_pylist() if c is not None}
        finally:
            binding.end_query(query)

    check()


# ---- batch shapes --------------------------------------------------------------------------------


def test_large_batches_span_chunks_and_match_numpy(client: Client) -> None:
    rng = np.random.default_rng(7)
    count = 5000
    values = rng.integers(-50, 50, count)
    nulls = rng.random(count) < 0.1
    cells = encrypt_column(pa.array(values, mask=nulls), CEK, "RANDOMIZED", "BIGINT")
    constant = cell(KINDS[0], 7)
    grants = [
        (1, binding.OP_LT, binding.TYPE_INT64, constant),
        (1, binding.OP_RANK, binding.TYPE_INT64, b""),
        (1, binding.OP_SUM, binding.TYPE_INT64, b""),
    ]
    query = client.begin("BIG", [(1, CEK)], grants)
    try:
        got = binding.enclave_compare(query, 1, binding.TYPE_INT64, binding.OP_LT, constant, cells)
        want = pa.array(values < 7, mask=nulls)
        assert got.equals(want)
        ranks = binding.enclave_rank(query, 1, binding.TYPE_INT64, cells)
        distinct = np.unique(values[~nulls])
        assert ranks.equals(pa.array(np.searchsorted(distinct, values), mask=nulls))
        # A sliced input (non-zero Arrow offset) keeps its row alignment.
        sliced = binding.enclave_compare(
            query, 1, binding.TYPE_INT64, binding.OP_LT, constant, cells.slice(1000, 2100)
        )
        assert sliced.equals(want.slice(1000, 2100))
        total = binding.enclave_aggregate(
            query, 1, binding.TYPE_INT64, binding.OP_SUM, cells, np.zeros(count, np.int64), 1
        )
        plain = decrypt_column(total, CEK, "DECIMAL(38,0)").to_pylist()
        assert plain == [decimal.Decimal(int(values[~nulls].sum()))]
    finally:
        binding.end_query(query)


@pytest.mark.parametrize("values", [[], [None], [5], [None, None]])
def test_empty_single_and_all_null_batches(client: Client, values: list[int | None]) -> None:
    constant = cell(KINDS[0], 5)
    grants = [
        (1, binding.OP_EQ, binding.TYPE_INT64, constant),
        (1, binding.OP_RANK, binding.TYPE_INT64, b""),
        (1, binding.OP_MAX, binding.TYPE_INT64, b""),
    ]
    query = client.begin("SHAPES", [(1, CEK)], grants)
    try:
        cells = column(KINDS[0], values) if values else pa.array([], pa.binary())
        got = binding.enclave_compare(query, 1, binding.TYPE_INT64, binding.OP_EQ, constant, cells)
        assert got.to_pylist() == [None if v is None else v == 5 for v in values]
        ranks = binding.enclave_rank(query, 1, binding.TYPE_INT64, cells)
        assert ranks.to_pylist() == [None if v is None else 0 for v in values]
        top = binding.enclave_aggregate(
            query, 1, binding.TYPE_INT64, binding.OP_MAX, cells, [0] * len(values), 1
        )
        present = [v for v in values if v is not None]
        assert decrypt_column(top, CEK, "BIGINT").to_pylist() == [max(present, default=None)]
    finally:
        binding.end_query(query)


def test_join_through_group_ids(client: Client) -> None:
    """The host concatenates both sides' cells in one GROUP call and joins on the ids."""
    kind = KINDS[9]
    left, right = ["ab", "c", None, "😀"], ["😀", "ab", "zz"]
    cells = pa.concat_arrays([column(kind, left), column(kind, right)])
    query = client.begin("JOIN", [(1, CEK)], [(1, binding.OP_GROUP, kind.type_code, b"")])
    try:
        ids = binding.enclave_group(query, 1, kind.type_code, cells).to_pylist()
    finally:
        binding.end_query(query)
    left_ids, right_ids = ids[: len(left)], ids[len(left) :]
    pairs = {
        (i, j)
        for i, a in enumerate(left_ids)
        for j, b in enumerate(right_ids)
        if a is not None and a == b
    }
    assert pairs == {(0, 1), (3, 0)}


# ---- REENCRYPT and ENCRYPT -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", [binding.MODE_DETERMINISTIC, binding.MODE_RANDOMIZED])
def test_reencrypt_moves_cells_to_the_target_key(client: Client, mode: int) -> None:
    kind = KINDS[9]
    values = ["Ada", None, "", "😀" * 20]
    constant = struct.pack("<HB", 2, mode)
    grants = [
        (1, binding.OP_REENCRYPT, kind.type_code, constant),
        (2, binding.OP_REENCRYPT_TARGET, kind.type_code, struct.pack("<HB", 1, mode)),
    ]
    query = client.begin("ALTER", [(1, CEK), (2, OTHER_CEK)], grants)
    try:
        moved = binding.enclave_reencrypt(query, 1, kind.type_code, constant, column(kind, values))
    finally:
        binding.end_query(query)
    assert decrypt_column(moved, OTHER_CEK, kind.sql_type).to_pylist() == values
    deterministic = encrypt_column(values, OTHER_CEK, "DETERMINISTIC", kind.sql_type)
    assert moved.equals(deterministic) == (mode == binding.MODE_DETERMINISTIC)


@pytest.mark.parametrize(
    "target_grant",
    [
        None,
        # ENCRYPT on the target no longer stands in for the target's own entry.
        (binding.OP_ENCRYPT, b""),
        # A target entry for another source key, or for the other mode.
        (binding.OP_REENCRYPT_TARGET, struct.pack("<HB", 3, binding.MODE_RANDOMIZED)),
        (binding.OP_REENCRYPT_TARGET, struct.pack("<HB", 1, binding.MODE_DETERMINISTIC)),
    ],
    ids=["none", "encrypt", "other-source", "other-mode"],
)
def test_reencrypt_needs_the_targets_own_entry(
    client: Client, target_grant: tuple[int, bytes] | None
) -> None:
    kind = KINDS[0]
    constant = struct.pack("<HB", 2, binding.MODE_RANDOMIZED)
    grants = [(1, binding.OP_REENCRYPT, kind.type_code, constant)]
    keys = [(1, CEK), (2, OTHER_CEK), (3, os.urandom(32))]
    if target_grant is not None:
        grants.append((2, target_grant[0], kind.type_code, target_grant[1]))
    query = client.begin("ALTER", keys, grants)
    try:
        with pytest.raises(OperationalError, match="did not authorize"):
            binding.enclave_reencrypt(query, 1, kind.type_code, constant, column(kind, [1]))
    finally:
        binding.end_query(query)


@pytest.mark.parametrize("mode", [binding.MODE_DETERMINISTIC, binding.MODE_RANDOMIZED])
def test_a_rotation_package_is_no_encryption_oracle(client: Client, mode: int) -> None:
    """The host holds a re-encryption's package: it may move cells to the target key, but not
    encrypt a plaintext of its choice under it (in either mode), nor call the target entry."""
    from engine.client.normalization import normalize

    kind = KINDS[9]
    constant = struct.pack("<HB", 2, mode)
    target_constant = struct.pack("<HB", 1, mode)
    grants = [
        (1, binding.OP_REENCRYPT, kind.type_code, constant),
        (2, binding.OP_REENCRYPT_TARGET, kind.type_code, target_constant),
    ]
    guess = normalize(["a guess"], kind.sql_type)
    query = client.begin("ALTER", [(1, CEK), (2, OTHER_CEK)], grants)
    try:
        binding.enclave_reencrypt(query, 1, kind.type_code, constant, column(kind, ["x"]))
        for encrypt_constant in (b"", bytes([mode]), target_constant):
            with pytest.raises(OperationalError, match="did not authorize"):
                binding.enclave_encrypt(query, 2, kind.type_code, encrypt_constant, guess)
        with pytest.raises(OperationalError, match="did not authorize"):
            # Nor under the source key, nor by naming the target as REENCRYPT's source.
            binding.enclave_encrypt(query, 1, kind.type_code, b"", guess)
        with pytest.raises(OperationalError, match="did not authorize"):
            binding.enclave_reencrypt(query, 2, kind.type_code, target_constant, guess)
    finally:
        binding.end_query(query)


def test_encrypt_plaintexts_in_the_enclave(client: Client) -> None:
    from engine.client.normalization import normalize

    kind = KINDS[3]
    values = [decimal.Decimal("1.5"), None, decimal.Decimal("-2.25")]
    plaintexts = normalize(values, kind.sql_type)
    grants = [
        (1, binding.OP_ENCRYPT, kind.type_code, b""),
        (1, binding.OP_ENCRYPT, kind.type_code, b"\x01"),
    ]
    query = client.begin("ALTER", [(1, CEK)], grants)
    try:
        randomized = binding.enclave_encrypt(query, 1, kind.type_code, b"", plaintexts)
        deterministic = binding.enclave_encrypt(query, 1, kind.type_code, b"\x01", plaintexts)
        with pytest.raises(ProgrammingError):
            # A plaintext of the wrong shape for its type is refused.
            binding.enclave_encrypt(query, 1, binding.TYPE_DECIMAL, b"", pa.array([b""]))
    finally:
        binding.end_query(query)
    assert decrypt_column(randomized, CEK, kind.sql_type).to_pylist() == values
    assert deterministic.equals(encrypt_column(values, CEK, "DETERMINISTIC", kind.sql_type))
    assert not randomized.equals(deterministic)


def _free_codec_slots() -> int:
    """How many keys the codec's key table can still take (fills it, then frees it again)."""
    keys = []
    try:
        while True:
            keys.append(binding.CellKey(os.urandom(32)))
    except OperationalError:
        pass
    finally:
        for key in keys:
            key.close()
    return len(keys)


def test_query_keys_stay_out_of_the_codec_key_table(client: Client) -> None:
    before = _free_codec_slots()
    query = client.begin("KEYS", [(1, CEK), (2, OTHER_CEK)], [])
    try:
        # The query holds two CEKs, none of them in a codec slot a codec call could name.
        assert _free_codec_slots() == before
    finally:
        binding.end_query(query)


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_reencrypt_round_trips_every_type(kind: Kind, client: Client) -> None:
    from engine.client.normalization import normalize

    @SETTINGS
    @given(values=values_with_nulls(kind), deterministic=st.booleans())
    def check(values: list[Any], deterministic: bool) -> None:
        mode = binding.MODE_DETERMINISTIC if deterministic else binding.MODE_RANDOMIZED
        constant = struct.pack("<HB", 2, mode)
        grants = [
            (1, binding.OP_REENCRYPT, kind.type_code, constant),
            (2, binding.OP_REENCRYPT_TARGET, kind.type_code, struct.pack("<HB", 1, mode)),
        ]
        query = client.begin("ALTER", [(1, CEK), (2, OTHER_CEK)], grants)
        try:
            moved = binding.enclave_reencrypt(
                query, 1, kind.type_code, constant, column(kind, values)
            )
        finally:
            binding.end_query(query)
        with binding.CellKey(OTHER_CEK) as key:
            plaintexts = binding.decrypt_cells(key, moved)
        assert plaintexts.equals(normalize(values, kind.sql_type))

    check()


def test_concurrent_calls_and_end_query_do_not_crash(client: Client) -> None:
    """Operators run with the GIL released; a query ended under them fails cleanly."""
    import threading

    constant = cell(KINDS[0], 0)
    cells = column(KINDS[0], list(range(-3000, 3000)))
    query = client.begin("THREADS", [(1, CEK)], [(1, binding.OP_GT, binding.TYPE_INT64, constant)])
    want = pa.array([v > 0 for v in range(-3000, 3000)])
    outcomes: list[str] = []

    def work() -> None:
        for _ in range(20):
            try:
                got = binding.enclave_compare(
                    query, 1, binding.TYPE_INT64, binding.OP_GT, constant, cells
                )
            except OperationalError:
                outcomes.append("ended")
                continue
            outcomes.append("ok" if got.equals(want) else "wrong")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    binding.end_query(query)
    for thread in threads:
        thread.join()
    assert "wrong" not in outcomes
    assert len(outcomes) == 80
