"""In-place ALTER COLUMN through a Connection (client-streaming path): round trips on every
supported type against a plaintext DuckDB oracle, the full sequence on one table, atomicity
(tampered cells, Ctrl-C, refusals), concurrent readers, and which path ran."""

from __future__ import annotations

import threading
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine
from engine import errors
from engine.rotation import PlaintextColumnWarning, rotate_cek, rotate_cmk
from tests.support.keys import make_pem_keys

ENC = (
    "ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = {}, ENCRYPTION_TYPE = {}, "
    "ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')"
)
ROWS = 300

# (plaintext DuckDB type, declared type once encrypted, a value expression over i).
TYPES = [
    ("TINYINT", "TINYINT", "(i % 256 - 128)::TINYINT"),
    ("SMALLINT", "SMALLINT", "(i * 211 % 65536 - 32768)::SMALLINT"),
    ("INTEGER", "INT", "CASE WHEN i = 1 THEN -2147483648 ELSE i * 7919 - 1000000 END"),
    ("BIGINT", "BIGINT", "CASE WHEN i = 1 THEN 9223372036854775807 ELSE i * -104729 END"),
    ("BOOLEAN", "BIT", "i % 3 = 0"),
    ("REAL", "REAL", "(i / 7.0 - 20)::REAL"),
    ("DOUBLE", "DOUBLE", "i * 1.0e10 / 3 - 1e12"),
    ("DECIMAL(18,4)", "DECIMAL(18,4)", "(i * 12345.6789 - 1e6)::DECIMAL(18,4)"),
    ("DATE", "DATE", "DATE '1900-01-01' + i * 97"),
    ("TIME", "TIME", "TIME '00:00:00' + INTERVAL (i * 287) SECOND"),
    (
        "TIMESTAMP",
        "TIMESTAMP",
        "TIMESTAMP '1970-01-01' + INTERVAL (i::BIGINT * 86399123) MILLISECOND",
    ),
    ("VARCHAR", "VARCHAR(40)", "'v' || i || CASE WHEN i % 5 = 0 THEN ' Grüße 世界' ELSE '' END"),
    ("VARCHAR", "NVARCHAR(40)", "'ü' || repeat('x', i % 30) || '😀'"),
    ("VARCHAR", "CHAR(11)", "lpad(i::VARCHAR, 11, '0')"),
    ("BLOB", "VARBINARY(16)", "('\\x00\\xFF' || i::VARCHAR)::BLOB"),
    ("UUID", "UUID", "md5(i::VARCHAR)::UUID"),
    ("TIMESTAMPTZ", "TIMESTAMPTZ", "TIMESTAMPTZ '2001-02-03 04:05:06+00' + INTERVAL (i) HOUR"),
    ("VARCHAR", "NCHAR(12)", "'n' || i"),
    ("INTEGER", "BIGINT", "i * 1000003"),
    ("HUGEINT", "DECIMAL(38,0)", "(i::HUGEINT * 99999999999999999) - 10"),
]


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("alter-keys")
    return make_pem_keys(directory, "cmk1.pem", "cmk2.pem", "cmk3.pem")


def _keys(con: engine.Connection) -> None:
    con.execute(
        "CREATE COLUMN MASTER KEY cmk1 WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
        "KEY_PATH = 'cmk1.pem')"
    )
    con.execute(
        "CREATE COLUMN MASTER KEY cmk2 WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
        "KEY_PATH = 'cmk2.pem', ENCLAVE_COMPUTATIONS)"
    )
    for cek, cmk in (("cek1", "cmk1"), ("cek2", "cmk1"), ("cek_e", "cmk2")):
        con.execute(
            f"CREATE COLUMN ENCRYPTION KEY {cek} WITH VALUES (COLUMN_MASTER_KEY = {cmk}, "
            "ALGORITHM = 'RSA_OAEP')"
        )


@pytest.fixture()
def path(tmp_path: Path, key_dir: Path) -> Path:
    file = tmp_path / "alter.duckdb"
    with engine.connect(str(file), key_dir=str(key_dir)) as con:
        _keys(con)
    return file


@pytest.fixture()
def con(path: Path, key_dir: Path) -> engine.Connection:
    connection = engine.connect(str(path), key_dir=str(key_dir))
    yield connection
    connection.close()


def _fill(con: engine.Connection, plain_type: str, expression: str, rows: int = ROWS) -> None:
    """Table t (id, v) and its plaintext twin oracle, with NULLs in every 7th row."""
    value = f"CASE WHEN i % 7 = 3 THEN NULL ELSE {expression} END"
    for table in ("t", "oracle"):
        con.execute(f"CREATE TABLE {table} (id INTEGER, v {plain_type})")
        numbers = f"(SELECT range::INTEGER AS i FROM range({rows}))"
        con.execute(f"INSERT INTO {table} SELECT i, {value} FROM {numbers}")


def _values(con: engine.Connection, table: str = "t") -> list[tuple[object, ...]]:
    return con.execute(f"SELECT id, v FROM {table} ORDER BY id").fetchall()


def _encryption(con: engine.Connection) -> tuple[str, str, str] | None:
    column = con._current_snapshot().column("t", "v")
    if column.encryption is None:
        return None
    return (column.encryption.cek_name, column.encryption.encryption_type, column.declared_type)


def _stored_type(con: engine.Connection, table: str = "t") -> str:
    return con.execute(
        "SELECT data_type FROM duckdb_columns() WHERE table_name = ? AND column_name = 'v'",
        [table],
    ).fetchone()[0]


@pytest.mark.parametrize(("plain_type", "declared", "expression"), TYPES, ids=[t[1] for t in TYPES])
def test_round_trip_every_type(
    con: engine.Connection, plain_type: str, declared: str, expression: str
) -> None:
    _fill(con, plain_type, expression)
    oracle = _values(con, "oracle")
    assert len(oracle) == ROWS and any(v is None for _, v in oracle)

    first = con.alter_column_encryption(
        f"ALTER TABLE t ALTER COLUMN v {declared} {ENC.format('cek1', 'DETERMINISTIC')}"
    )
    assert (first.kind, first.path, first.rows) == ("encrypt", "client", ROWS)
    assert _stored_type(con) == "BLOB"
    assert _encryption(con)[:2] == ("cek1", "DETERMINISTIC")
    assert _values(con) == oracle

    con.execute(f"ALTER TABLE t ALTER COLUMN v {declared} {ENC.format('cek2', 'RANDOMIZED')}")
    assert _encryption(con)[:2] == ("cek2", "RANDOMIZED")
    assert _values(con) == oracle

    with pytest.warns(PlaintextColumnWarning, match="t.v was decrypted"):
        last = con.alter_column_encryption(
            f"ALTER TABLE t ALTER COLUMN v {plain_type}", allow_decryption=True
        )
    assert (last.kind, last.path) == ("decrypt", "client")
    assert _encryption(con) is None and _stored_type(con) == _stored_type(con, "oracle")
    # Back to plaintext: DuckDB itself is the oracle, with IS DISTINCT FROM on every row.
    differing = con.execute(
        "SELECT count(*) FROM t JOIN oracle USING (id) WHERE t.v IS DISTINCT FROM oracle.v"
    ).fetchone()[0]
    assert differing == 0


def test_encrypt_rotate_switch_rotate_cmk_decrypt_in_sequence(
    con: engine.Connection, path: Path, key_dir: Path
) -> None:
    _fill(con, "VARCHAR", "'name-' || i", rows=5000)
    oracle = _values(con, "oracle")

    con.execute(f"ALTER TABLE t ALTER COLUMN v VARCHAR(20) {ENC.format('cek1', 'DETERMINISTIC')}")
    assert _encryption(con) == ("cek1", "DETERMINISTIC", "VARCHAR(20)")
    assert _values(con) == oracle
    # Deterministic ciphertext supports equality in DuckDB.
    assert con.execute("SELECT id FROM t WHERE v = 'name-42'").fetchall() == [(42,)]

    result = rotate_cek(con, "t", "v", "cek2", batch_rows=1024)
    assert (result.kind, result.path, result.rows) == ("reencrypt", "client", 5000)
    assert _encryption(con) == ("cek2", "DETERMINISTIC", "VARCHAR(20)")
    assert _values(con) == oracle

    con.execute(f"ALTER TABLE t ALTER COLUMN v VARCHAR(20) {ENC.format('cek2', 'RANDOMIZED')}")
    assert _encryption(con) == ("cek2", "RANDOMIZED", "VARCHAR(20)")
    with pytest.raises(errors.ProgrammingError, match="RANDOMIZED"):
        con.execute("SELECT id FROM t WHERE v = 'name-42'")

    statements = rotate_cmk(con, "cek2", "cmk2")
    assert len(statements) == 2 and "ADD VALUE" in statements[0] and "DROP VALUE" in statements[1]
    values = con._current_snapshot().cek("cek2").values
    assert [v.cmk_name for v in values] == ["cmk2"]
    con.close()
    # A fresh client that trusts only the new CMK's key path still reads everything.
    with engine.connect(str(path), key_dir=str(key_dir), trusted_key_paths={"cmk2.pem"}) as fresh:
        assert _values(fresh) == oracle
        with pytest.warns(PlaintextColumnWarning):
            fresh.alter_column_encryption(
                "ALTER TABLE t ALTER COLUMN v VARCHAR", allow_decryption=True
            )
        assert _encryption(fresh) is None
        assert _values(fresh) == oracle


def test_decryption_needs_the_opt_in_and_changes_nothing_without_it(
    con: engine.Connection,
) -> None:
    _fill(con, "INTEGER", "i")
    con.execute(f"ALTER TABLE t ALTER COLUMN v INT {ENC.format('cek1', 'RANDOMIZED')}")
    version = con._host.catalog_version()
    with pytest.raises(errors.ProgrammingError, match="allow_decryption=True"):
        con.execute("ALTER TABLE t ALTER COLUMN v INTEGER")
    with pytest.raises(errors.ProgrammingError, match="allow_decryption=True"):
        con.alter_column_encryption("ALTER TABLE t ALTER COLUMN v INTEGER")
    assert con._host.catalog_version() == version
    assert _stored_type(con) == "BLOB" and _values(con) == _values(con, "oracle")


def test_a_tampered_cell_aborts_the_whole_change(con: engine.Connection, path: Path) -> None:
    _fill(con, "INTEGER", "i * 3", rows=3000)
    con.execute(f"ALTER TABLE t ALTER COLUMN v INT {ENC.format('cek1', 'DETERMINISTIC')}")
    # The host (here: raw DuckDB on the same database) flips a byte of one late cell.
    con._host._con.execute(
        "UPDATE t SET v = unhex(substr(hex(v), 1, 80) || '00' || substr(hex(v), 83)) "
        "WHERE id = 2900"
    )
    version = con._host.catalog_version()
    with pytest.raises(errors.CellAuthenticationError):
        rotate_cek(con, "t", "v", "cek2", batch_rows=500)
    assert con._host.catalog_version() == version
    assert _encryption(con) == ("cek1", "DETERMINISTIC", "INTEGER")
    # Every untouched row still decrypts under cek1: nothing was half-rewritten.
    assert con.execute("SELECT count(*) FROM t WHERE id < 2900 AND v IS NOT NULL").fetchone()[0]
    rows = con.execute("SELECT id, v FROM t WHERE id < 2900 ORDER BY id").fetchall()
    assert rows == con.execute("SELECT id, v FROM oracle WHERE id < 2900 ORDER BY id").fetchall()


def test_ctrl_c_leaves_the_old_state(con: engine.Connection) -> None:
    _fill(con, "INTEGER", "i", rows=4000)
    con.execute(f"ALTER TABLE t ALTER COLUMN v INT {ENC.format('cek1', 'DETERMINISTIC')}")
    seen: list[int] = []

    def interrupt(rows: int) -> None:
        seen.append(rows)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rotate_cek(con, "t", "v", "cek2", batch_rows=1000, progress=interrupt)
    assert seen == [1000, 1000]
    assert _encryption(con) == ("cek1", "DETERMINISTIC", "INTEGER")
    assert _values(con) == _values(con, "oracle")
    columns = con.execute("SELECT column_name FROM duckdb_columns() WHERE table_name = 't'")
    assert [c for (c,) in columns.fetchall()] == ["id", "v"]


def test_the_enclave_path_is_refused_for_keys_that_are_not_enclave_enabled(
    con: engine.Connection,
) -> None:
    _fill(con, "INTEGER", "i")
    con.execute(f"ALTER TABLE t ALTER COLUMN v INT {ENC.format('cek1', 'RANDOMIZED')}")
    version = con._host.catalog_version()
    with pytest.raises(errors.ProgrammingError, match="is not enclave-enabled"):
        rotate_cek(con, "t", "v", "cek2", path="enclave")
    with pytest.raises(errors.ProgrammingError, match="enclave only re-encrypts"):
        con.alter_column_encryption(
            "ALTER TABLE t ALTER COLUMN v INT", path="enclave", allow_decryption=True
        )
    assert con._host.catalog_version() == version and _encryption(con)[0] == "cek1"
    assert _values(con) == _values(con, "oracle")
    # Enclave-enabled keys, but no enclave session on this connection.
    assert rotate_cek(con, "t", "v", "cek_e").path == "client"
    version = con._host.catalog_version()
    with pytest.raises(errors.OperationalError, match="no enclave session"):
        rotate_cek(con, "t", "v", "cek_e", path="enclave", encryption_type="DETERMINISTIC")
    assert con._host.catalog_version() == version and _encryption(con)[:2] == (
        "cek_e",
        "RANDOMIZED",
    )


def test_key_constraints_are_respected(con: engine.Connection) -> None:
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v VARCHAR UNIQUE)")
    con.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    with pytest.raises(errors.NotSupportedError, match="UNIQUE"):
        con.execute(
            f"ALTER TABLE t ALTER COLUMN v VARCHAR(5) {ENC.format('cek1', 'DETERMINISTIC')}"
        )
    assert _encryption(con) is None and _stored_type(con) == "VARCHAR"


def test_a_unique_deterministic_column_can_be_rotated_but_not_randomized(
    con: engine.Connection,
) -> None:
    con.execute(
        f"CREATE TABLE t (id INTEGER, v CHAR(3) {ENC.format('cek1', 'DETERMINISTIC')} UNIQUE)"
    )
    con.execute("INSERT INTO t VALUES (1, 'abc'), (2, 'xyz')")
    rotate_cek(con, "t", "v", "cek2")
    assert _values(con) == [(1, "abc"), (2, "xyz")]
    with pytest.raises(errors.IntegrityError):
        con.execute("INSERT INTO t VALUES (3, 'abc')")
    with pytest.raises(errors.ProgrammingError, match="RANDOMIZED"):
        rotate_cek(con, "t", "v", "cek2", encryption_type="RANDOMIZED")
    assert _encryption(con)[:2] == ("cek2", "DETERMINISTIC")


def test_readers_see_consistent_answers_and_writers_are_refused_while_a_rotation_runs(
    path: Path, key_dir: Path
) -> None:
    writer = engine.connect(str(path), key_dir=str(key_dir))
    reader = engine.connect(str(path), key_dir=str(key_dir))
    try:
        _fill(writer, "INTEGER", "i * 11", rows=6000)
        writer.execute(f"ALTER TABLE t ALTER COLUMN v INT {ENC.format('cek1', 'DETERMINISTIC')}")
        expected = _values(reader, "oracle")
        halfway, resume = threading.Event(), threading.Event()
        failure: list[BaseException] = []

        def pause(rows: int) -> None:
            halfway.set()
            assert resume.wait(30)

        def rotate() -> None:
            try:
                rotate_cek(writer, "t", "v", "cek2", batch_rows=2000, progress=pause)
            except BaseException as error:  # pragma: no cover - reported below
                failure.append(error)

        thread = threading.Thread(target=rotate)
        thread.start()
        assert halfway.wait(30)
        # Mid-rotation the reader sees the old catalog and the old cells, all consistent.
        assert _encryption(reader)[0] == "cek1"
        assert _values(reader) == expected
        assert reader.execute("SELECT id FROM t WHERE v = ?", [55]).fetchall() == [(5,)]
        # A concurrent write would put a cell under the old key; DuckDB refuses it instead.
        with pytest.raises(errors.DatabaseError, match="[Cc]onflict"):
            reader.execute("INSERT INTO t VALUES (?, ?)", [6000, 66000])
        with pytest.raises(errors.DatabaseError, match="[Cc]onflict"):
            reader.execute("UPDATE t SET v = ? WHERE id = 1", [1])
        resume.set()
        thread.join(60)
        assert not failure
        assert _encryption(reader)[0] == "cek2"
        assert _values(reader) == expected
        reader.execute("INSERT INTO t VALUES (?, ?)", [6000, 66000])  # now it goes under cek2
        assert reader.execute("SELECT v FROM t WHERE id = 6000").fetchall() == [(66000,)]
        assert reader.execute("SELECT id FROM t WHERE v = ?", [55]).fetchall() == [(5,)]
    finally:
        reader.close()
        writer.close()


def test_the_file_holds_no_shadow_column_and_opens_after_close(path: Path, key_dir: Path) -> None:
    with engine.connect(str(path), key_dir=str(key_dir)) as con:
        _fill(con, "DATE", "DATE '2000-01-01' + i")
        con.execute(f"ALTER TABLE t ALTER COLUMN v DATE {ENC.format('cek1', 'RANDOMIZED')}")
    raw = duckdb.connect(str(path), read_only=True)
    try:
        names = raw.execute("SELECT column_name FROM duckdb_columns() WHERE table_name = 't'")
        assert [n for (n,) in names.fetchall()] == ["id", "v"]
        stored = raw.execute(
            "SELECT table_name, column_name, encryption_type_desc FROM sys.encrypted_columns"
        ).fetchall()
        assert stored == [("t", "v", "RANDOMIZED")]
    finally:
        raw.close()


_STEPS = st.lists(
    st.tuples(st.sampled_from(["cek1", "cek2"]), st.sampled_from(["DETERMINISTIC", "RANDOMIZED"])),
    min_size=1,
    max_size=4,
)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    values=st.lists(st.one_of(st.none(), st.text(alphabet="aé漢😀 '", max_size=8)), max_size=40),
    steps=_STEPS,
    batch_rows=st.integers(1, 16),
)
def test_any_sequence_of_changes_keeps_the_values(
    path: Path,
    key_dir: Path,
    values: list[str | None],
    steps: list[tuple[str, str]],
    batch_rows: int,
) -> None:
    with engine.connect(str(path), key_dir=str(key_dir)) as con:
        con.execute("DROP TABLE IF EXISTS t")
        con.execute("CREATE TABLE t (id INTEGER, v VARCHAR)")
        if values:
            con.cursor().executemany("INSERT INTO t VALUES (?, ?)", list(enumerate(values)))
        expected = list(enumerate(values))
        for cek, kind in steps:
            con.alter_column_encryption(
                f"ALTER TABLE t ALTER COLUMN v NVARCHAR(8) {ENC.format(cek, kind)}",
                batch_rows=batch_rows,
            )
            assert _encryption(con) == (cek, kind, "NVARCHAR(8)")
            assert _values(con) == expected
        with pytest.warns(PlaintextColumnWarning):
            con.alter_column_encryption(
                "ALTER TABLE t ALTER COLUMN v VARCHAR", allow_decryption=True, batch_rows=batch_rows
            )
        assert _encryption(con) is None and _values(con) == expected


def _compressions(con: engine.Connection) -> set[str]:
    rows = con._host._con.execute(
        "SELECT DISTINCT compression FROM pragma_storage_info('t') "
        "WHERE column_name = 'v' AND segment_type <> 'VALIDITY'"
    ).fetchall()
    return {name for (name,) in rows}


def _compression_setting(con: engine.Connection) -> str:
    return str(con.execute("SELECT current_setting('force_compression')").fetchone()[0])


def test_new_cells_are_checkpointed_uncompressed_and_the_setting_is_put_back(
    con: engine.Connection,
) -> None:
    # Ten distinct values: DuckDB would store them with a dictionary if it tried.
    _fill(con, "VARCHAR", "'value ' || (i % 10)::VARCHAR", rows=3000)
    con._host._con.execute("SET checkpoint_threshold = '1KB'")  # every commit checkpoints
    con.execute(f"ALTER TABLE t ALTER COLUMN v VARCHAR {ENC.format('cek1', 'DETERMINISTIC')}")
    assert _compressions(con) == {"Uncompressed"}
    assert _compression_setting(con) == "auto"
    # A setting of the user's own survives a rotation, also one that fails.
    con.execute("SET force_compression = 'dictionary'")
    rotate_cek(con, "t", "v", "cek2")
    assert _compression_setting(con) == "dictionary"
    con._host._con.execute("UPDATE t SET v = unhex('00') WHERE id = 0")
    with pytest.raises(errors.CellAuthenticationError):
        rotate_cek(con, "t", "v", "cek1")
    assert _compression_setting(con) == "dictionary"
    con.execute("SET force_compression = 'auto'")
    # Plaintext that comes back out is left to DuckDB's compression.
    con._host._con.execute("UPDATE t SET v = NULL WHERE id = 0")
    with pytest.warns(PlaintextColumnWarning):
        con.alter_column_encryption("ALTER TABLE t ALTER COLUMN v VARCHAR", allow_decryption=True)
    assert "Uncompressed" not in _compressions(con)
    assert _values(con)[1:] == _values(con, "oracle")[1:]


def test_ctrl_c_inside_the_transform_comes_out_as_itself_and_changes_nothing() -> None:
    import pyarrow as pa

    from engine.host.column_rewrite import rewrite_column

    raw = duckdb.connect()
    raw.execute(
        "CREATE TABLE t AS SELECT range::INTEGER AS id, range::VARCHAR::BLOB AS v FROM range(9000)"
    )
    before = raw.execute("SELECT id, v FROM t ORDER BY id").fetchall()
    calls: list[int] = []

    def transform(values: pa.Array) -> pa.Array:
        calls.append(len(values))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return values

    raw.execute("BEGIN")
    with pytest.raises(KeyboardInterrupt):
        rewrite_column(
            raw,
            "t",
            "v",
            storage_type="BLOB",
            read_type=None,
            transform=transform,
            batch_rows=100_000,
        )
    raw.execute("ROLLBACK")
    assert raw.execute("SELECT id, v FROM t ORDER BY id").fetchall() == before
    columns = raw.execute("SELECT column_name FROM duckdb_columns() WHERE table_name = 't'")
    assert [c for (c,) in columns.fetchall()] == ["id", "v"]


def test_interleaved_ciphertext_checkpoints_restore_the_setting(tmp_path: Path) -> None:
    # Two connections of one process to one file share DuckDB's force_compression. A rewrite
    # that ends while another is still running must not restore it under the other's feet,
    # and the last one out must put back what was there before the first.
    from engine.host.column_rewrite import ciphertext_checkpoint

    path = str(tmp_path / "shared.duckdb")
    first, second = duckdb.connect(path), duckdb.connect(path)

    def setting() -> str:
        return str(first.execute("SELECT current_setting('force_compression')").fetchall()[0][0])

    try:
        a = ciphertext_checkpoint(first, enabled=True)
        b = ciphertext_checkpoint(second, enabled=True)
        a.__enter__()
        b.__enter__()
        a.__exit__(None, None, None)
        assert setting() == "uncompressed"  # the second rewrite is still committing
        b.__exit__(None, None, None)
        assert setting() == "auto"
    finally:
        first.close()
        second.close()
