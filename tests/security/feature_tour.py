"""The feature tour: one function that drives every DB-API feature available today over encrypted
columns of every type (key DDL, DDL, inserts by literal, parameter, executemany and bulk_insert,
deterministic lookups, joins, grouping, updates, deletes and the refusals that must raise), with a
fresh canary for every plaintext it writes. Leak scans run it and then search what it left behind.

It checks that each step did what it should (rows read back, the right error class), so a scan
over a tour that silently did nothing cannot pass. It must not scan anything itself. New features
join as optional steps at the end (see ``_enclave_steps`` and ``_rotation_steps``).
"""

from __future__ import annotations

import datetime
import decimal
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from engine import errors
from engine.client.client import Client
from engine.client.keystores import build_registry
from engine.connection import Connection
from engine.host.host import Host
from engine.host.recording import RecordingHost
from tests.support.canaries import CANARY_TYPES, CanaryBook

__all__ = [
    "KINDS",
    "RECORDERS",
    "connect_recording",
    "TourResult",
    "encrypted_table_sql",
    "make_key_files",
    "open_recording_connection",
    "run_feature_tour",
    "sql_literal",
]

KINDS = tuple(CANARY_TYPES)
ALGORITHM = "AEAD_AES_256_CBC_HMAC_SHA_256"
KEY_FILES = ("cmk_tour.pem", "cmk_tour_enclave.pem")


def _encrypted_with(cek: str, encryption_type: str) -> str:
    return (
        f"ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = {cek}, ENCRYPTION_TYPE = {encryption_type}, "
        f"ALGORITHM = '{ALGORITHM}')"
    )


def encrypted_table_sql(table: str, cek: str, encryption_type: str) -> str:
    """CREATE TABLE with a plaintext ``id`` and ``note`` and one encrypted column ``c_<kind>``
    per canary type, all under ``cek``.

    >>> print(encrypted_table_sql("t", "k", "RANDOMIZED")[:59])
    CREATE TABLE t (id INTEGER PRIMARY KEY, note VARCHAR, c_int
    """
    columns = ["id INTEGER PRIMARY KEY", "note VARCHAR"]
    for kind, declared in CANARY_TYPES.items():
        unique = " UNIQUE" if kind == "varchar" and encryption_type == "DETERMINISTIC" else ""
        columns.append(f"c_{kind} {declared} {_encrypted_with(cek, encryption_type)}{unique}")
    return f"CREATE TABLE {table} ({', '.join(columns)})"


def sql_literal(value: object) -> str:
    """``value`` written as a SQL literal the way a user would type it.

    >>> sql_literal(datetime.date(2024, 1, 31)), sql_literal("it's"), sql_literal(b"AB")
    ("DATE '2024-01-31'", "'it''s'", "BLOB '\\\\x41\\\\x42'")
    """
    if isinstance(value, bytes):
        return "BLOB '" + "".join(f"\\x{byte:02X}" for byte in value) + "'"
    if isinstance(value, datetime.datetime):
        keyword = "TIMESTAMPTZ" if value.tzinfo is not None else "TIMESTAMP"
        return f"{keyword} '{value.isoformat(sep=' ')}'"
    if isinstance(value, datetime.date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, datetime.time):
        return f"TIME '{value.isoformat()}'"
    if isinstance(value, (int, float, decimal.Decimal)):
        return repr(value) if isinstance(value, float) else str(value)
    return "'" + str(value).replace("'", "''") + "'"


def make_key_files(directory: Path) -> Path:
    """PEM column master keys for the tour in ``directory`` (made once per directory)."""
    directory.mkdir(parents=True, exist_ok=True)
    provider = build_registry(key_directory=directory).get("PEM_FILE")
    for name in KEY_FILES:
        if not (directory / name).exists():
            provider.generate_key(name, key_size=2048)
    return directory


def open_recording_connection(database: str, key_dir: Path) -> tuple[Connection, RecordingHost]:
    """A Connection whose host records every call it receives (engine.connect cannot take a
    host, so this joins the same Client and Host by hand)."""
    host = RecordingHost(Host(database))
    client = Client(key_dir=str(key_dir))
    return Connection(host, client), host


# Hosts made by connect_recording, so a test can scan what a REPL's connection received.
RECORDERS: list[RecordingHost] = []


def connect_recording(database: str, *, key_dir: str | None = None, **options: Any) -> Connection:
    """Like ``engine.connect`` for the REPL's ``--connect``, but the host records its calls in
    ``RECORDERS``. Options other than ``key_dir`` and ``column_encryption`` are refused."""
    unknown = set(options) - {"column_encryption"}
    if unknown:
        raise errors.ProgrammingError(f"connect_recording does not take {sorted(unknown)}")
    host = RecordingHost(Host(database))
    RECORDERS.append(host)
    return Connection(host, Client(key_dir=key_dir, **options))


@dataclass
class TourResult:
    """What the tour did: its canaries, every error it provoked (step, exception), the steps it
    skipped because their feature is not there yet, and plaintext controls that a scan of the
    host's input must find (proof that the scan looks at the right bytes)."""

    book: CanaryBook = field(default_factory=CanaryBook)
    errors: list[tuple[str, BaseException]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    plain_controls: list[str] = field(default_factory=list)


def _row_values(row: dict[str, object]) -> list[object]:
    return [row[kind] for kind in KINDS]


def _same(expected: object, actual: object) -> bool:
    """Equality as a round trip should preserve it (a TIMESTAMPTZ may come back in UTC)."""
    if isinstance(expected, datetime.datetime) and isinstance(actual, datetime.datetime):
        return expected == actual
    if isinstance(expected, float):
        return isinstance(actual, float) and expected == actual
    return expected == actual


class _Tour:
    def __init__(self, connection: Connection, result: TourResult) -> None:
        self.connection = connection
        self.cursor = connection.cursor()
        self.result = result
        self.book = result.book
        self.rows: dict[str, dict[int, dict[str, object]]] = {"tour_det": {}, "tour_rand": {}}

    def expect_error(
        self, step: str, error_class: type[errors.Error], run: Callable[[], Any]
    ) -> None:
        """Run a step that must raise ``error_class``; keep the error for the scans."""
        try:
            run()
        except errors.Error as error:
            self.result.errors.append((step, error))
            if not isinstance(error, error_class):
                raise AssertionError(
                    f"{step}: expected {error_class.__name__}, got {type(error).__name__}"
                ) from error
            return
        raise AssertionError(f"{step}: expected {error_class.__name__}, nothing was raised")

    def note(self, label: str) -> str:
        """A plaintext value for the plaintext ``note`` column: the scans' positive control."""
        value = f"PLAIN-CONTROL-{label}-{len(self.result.plain_controls)}"
        self.result.plain_controls.append(value)
        return value

    # Steps.

    def keys(self) -> None:
        run = self.cursor.execute
        run(
            "CREATE COLUMN MASTER KEY cmk_tour WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
            f"KEY_PATH = '{KEY_FILES[0]}')"
        )
        run(
            "CREATE COLUMN MASTER KEY cmk_tour_enclave WITH (KEY_STORE_PROVIDER_NAME = 'PEM_FILE', "
            f"KEY_PATH = '{KEY_FILES[1]}', ENCLAVE_COMPUTATIONS)"
        )
        for cek, cmk in (
            ("cek_det", "cmk_tour"),
            ("cek_rand", "cmk_tour_enclave"),
            ("cek_other", "cmk_tour"),
        ):
            run(
                f"CREATE COLUMN ENCRYPTION KEY {cek} WITH VALUES (COLUMN_MASTER_KEY = {cmk}, "
                "ALGORITHM = 'RSA_OAEP')"
            )
        # A CEK with two values (as during CMK rotation), then back to one.
        run(
            "ALTER COLUMN ENCRYPTION KEY cek_other ADD VALUE ("
            "COLUMN_MASTER_KEY = cmk_tour_enclave, ALGORITHM = 'RSA_OAEP')"
        )
        run("ALTER COLUMN ENCRYPTION KEY cek_other DROP VALUE (COLUMN_MASTER_KEY = cmk_tour)")

    def tables(self) -> None:
        run = self.cursor.execute
        run(encrypted_table_sql("tour_det", "cek_det", "DETERMINISTIC"))
        run(encrypted_table_sql("tour_rand", "cek_rand", "RANDOMIZED"))
        run(
            "CREATE TABLE tour_orders (order_id INTEGER, amount INTEGER, "
            f"buyer VARCHAR {_encrypted_with('cek_det', 'DETERMINISTIC')})"
        )
        run(
            "CREATE TABLE tour_other (id INTEGER, "
            f"c_varchar VARCHAR {_encrypted_with('cek_other', 'DETERMINISTIC')})"
        )
        run(
            "ALTER TABLE tour_orders ADD COLUMN memo NVARCHAR(80) "
            f"{_encrypted_with('cek_det', 'RANDOMIZED')}"
        )

    def _remember(self, table: str, identifier: int, row: dict[str, object], note: str) -> None:
        self.rows[table][identifier] = {"note": note, **row}

    def inserts(self) -> None:
        for table in self.rows:
            base = 100 if table == "tour_det" else 200
            # A literal for every type, typed as a user would.
            row = self.book.row(f"{table}-literal")
            note = self.note("literal")
            literals = ", ".join(sql_literal(v) for v in _row_values(row))
            self.cursor.execute(f"INSERT INTO {table} VALUES ({base}, '{note}', {literals})")
            self._remember(table, base, row, note)
            # Parameters.
            row = self.book.row(f"{table}-parameter")
            note = self.note("parameter")
            markers = ", ".join("?" for _ in range(len(KINDS) + 2))
            self.cursor.execute(
                f"INSERT INTO {table} VALUES ({markers})", [base + 1, note, *_row_values(row)]
            )
            self._remember(table, base + 1, row, note)
            # executemany (the vectorized path).
            many = []
            for offset in range(2, 5):
                row = self.book.row(f"{table}-executemany")
                note = self.note("executemany")
                many.append((base + offset, note, *_row_values(row)))
                self._remember(table, base + offset, row, note)
            self.cursor.executemany(f"INSERT INTO {table} VALUES ({markers})", many)
            # bulk_insert from tuples and from Arrow.
            row = self.book.row(f"{table}-bulk-tuples")
            note = self.note("bulk")
            self.connection.bulk_insert(table, [(base + 5, note, *_row_values(row))])
            self._remember(table, base + 5, row, note)
            row = self.book.row(f"{table}-bulk-arrow")
            note = self.note("arrow")
            arrow = pa.table(
                {"id": [base + 6], "note": [note], **{f"c_{k}": [row[k]] for k in KINDS}}
            )
            self.connection.bulk_insert(table, arrow)
            self._remember(table, base + 6, row, note)
        orders = self.rows["tour_det"]
        self.cursor.executemany(
            "INSERT INTO tour_orders VALUES (?, ?, ?, ?)",
            [
                (1, 10, orders[100]["varchar"], self.book.new("nvarchar", "orders-memo")),
                (2, 20, orders[100]["varchar"], self.book.new("nvarchar", "orders-memo")),
                (3, 30, orders[101]["varchar"], None),
            ],
        )
        self.cursor.execute(
            "INSERT INTO tour_other VALUES (1, ?)", [self.book.new("varchar", "other-key")]
        )

    def read_back(self) -> None:
        """Every row decrypts to what was written: the inserts really went through."""
        for table, expected in self.rows.items():
            columns = ", ".join(f"c_{k}" for k in KINDS)
            got = {
                row[0]: row[1:]
                for row in self.cursor.execute(f"SELECT id, note, {columns} FROM {table}")
            }
            assert sorted(got) == sorted(expected), f"{table}: the ids differ after the inserts"
            for identifier, row in expected.items():
                values = [row["note"], *_row_values(row)]
                mismatched = [
                    name
                    for name, want, have in zip(
                        ["note", *KINDS], values, got[identifier], strict=True
                    )
                    if not _same(want, have)
                ]
                assert not mismatched, f"{table} id {identifier}: {mismatched} did not round-trip"

    def lookups(self) -> None:
        det = self.rows["tour_det"]
        cursor = self.cursor
        for kind in KINDS:
            # Deterministic equality by literal and by parameter, on every type.
            value = det[101][kind]
            literal = sql_literal(value)
            found = cursor.execute(f"SELECT id FROM tour_det WHERE c_{kind} = {literal}").fetchall()
            assert found == [(101,)], f"literal lookup on c_{kind} found {found}"
            found = cursor.execute(
                f"SELECT id FROM tour_det WHERE c_{kind} = ?", [value]
            ).fetchall()
            assert found == [(101,)], f"parameter lookup on c_{kind} found {found}"
        wanted = (det[102]["varchar"], det[103]["varchar"], self.book.new("varchar", "absent"))
        found = cursor.execute(
            f"SELECT id FROM tour_det WHERE c_varchar IN ({', '.join(map(sql_literal, wanted))}) "
            "ORDER BY id"
        ).fetchall()
        assert found == [(102,), (103,)], f"IN lookup found {found}"
        missing = self.book.new("uuid", "absent-lookup")
        assert (
            cursor.execute("SELECT id FROM tour_det WHERE c_uuid = ?", [missing]).fetchall() == []
        )

    def joins_and_groups(self) -> None:
        det = self.rows["tour_det"]
        joined = self.cursor.execute(
            "SELECT o.order_id, p.id, p.c_nvarchar FROM tour_orders o "
            "JOIN tour_det p ON o.buyer = p.c_varchar ORDER BY o.order_id"
        ).fetchall()
        assert joined == [
            (1, 100, det[100]["nvarchar"]),
            (2, 100, det[100]["nvarchar"]),
            (3, 101, det[101]["nvarchar"]),
        ], "the join on a deterministic column gave another answer"
        grouped = self.cursor.execute(
            "SELECT buyer, count(*), sum(amount) FROM tour_orders GROUP BY buyer ORDER BY 2"
        ).fetchall()
        assert grouped == [(det[101]["varchar"], 1, 30), (det[100]["varchar"], 2, 30)]
        distinct = self.cursor.execute("SELECT count(DISTINCT buyer) FROM tour_orders").fetchone()
        assert distinct == (2,)

    def updates_and_deletes(self) -> None:
        det = self.rows["tour_det"]
        fresh = self.book.new("nvarchar", "update-literal")
        self.cursor.execute(
            f"UPDATE tour_det SET c_nvarchar = {sql_literal(fresh)} "
            f"WHERE c_uuid = {sql_literal(det[104]['uuid'])}"
        )
        assert self.cursor.rowcount == 1
        det[104]["nvarchar"] = fresh
        fresh = self.book.new("bigint", "update-parameter")
        self.cursor.execute("UPDATE tour_rand SET c_bigint = ? WHERE id = ?", [fresh, 203])
        self.rows["tour_rand"][203]["bigint"] = fresh
        self.cursor.execute(
            f"DELETE FROM tour_det WHERE c_varchar = {sql_literal(det[106]['varchar'])}"
        )
        assert self.cursor.rowcount == 1
        del det[106]
        # A transaction that rolls back leaves no row behind.
        self.cursor.execute("BEGIN")
        row = self.book.row("rolled-back")
        markers = ", ".join("?" for _ in range(len(KINDS) + 2))
        self.cursor.execute(
            f"INSERT INTO tour_det VALUES ({markers})", [999, "rolled back", *_row_values(row)]
        )
        self.connection.rollback()
        assert self.cursor.execute("SELECT count(*) FROM tour_det WHERE id = 999").fetchone() == (
            0,
        )

    def refusals(self) -> None:
        det = self.rows["tour_det"]
        run = self.cursor.execute
        text = self.book.new("varchar", "refused-like")
        self.expect_error(
            "LIKE on a deterministic column",
            errors.ProgrammingError,
            lambda: run(f"SELECT id FROM tour_det WHERE c_varchar LIKE {sql_literal(text)}"),
        )
        text = self.book.new("varchar", "refused-function")
        self.expect_error(
            "a function over an encrypted column",
            errors.NotSupportedError,
            lambda: run(f"SELECT id FROM tour_det WHERE upper(c_varchar) = {sql_literal(text)}"),
        )
        number = self.book.new("bigint", "refused-range")
        self.expect_error(
            "a range predicate without an enclave",
            errors.ProgrammingError,
            lambda: run(f"SELECT id FROM tour_rand WHERE c_bigint < {number}"),
        )
        self.expect_error(
            "equality on a randomized column without an enclave",
            errors.ProgrammingError,
            lambda: run("SELECT id FROM tour_rand WHERE c_uuid = ?", [det[100]["uuid"]]),
        )
        self.expect_error(
            "columns under different keys",
            errors.ProgrammingError,
            lambda: run("SELECT * FROM tour_det d JOIN tour_other o ON d.c_varchar = o.c_varchar"),
        )
        self.expect_error(
            "ciphertext against plaintext",
            errors.ProgrammingError,
            lambda: run("SELECT id FROM tour_det WHERE c_varchar = note"),
        )
        wrong = self.book.new("varchar", "wrong-type-literal")
        self.expect_error(
            "a string literal into an INTEGER column",
            errors.DataError,
            lambda: run(f"INSERT INTO tour_det (id, c_int) VALUES (900, {sql_literal(wrong)})"),
        )
        wrong = self.book.new("varchar", "wrong-type-parameter")
        self.expect_error(
            "a string parameter into a DATE column",
            errors.DataError,
            lambda: run("INSERT INTO tour_det (id, c_date) VALUES (?, ?)", [901, wrong]),
        )
        wrong = self.book.new("varchar", "wrong-type-executemany")
        self.expect_error(
            "a string into a UUID column by executemany",
            errors.DataError,
            lambda: self.cursor.executemany(
                "INSERT INTO tour_det (id, c_uuid) VALUES (?, ?)", [(902, wrong)]
            ),
        )
        wrong = self.book.new("varchar", "wrong-type-bulk")
        self.expect_error(
            "a string into a BIGINT column by bulk_insert",
            errors.DataError,
            lambda: self.connection.bulk_insert(
                "tour_rand", pa.table({"id": [903], "c_bigint": [wrong]})
            ),
        )
        text = self.book.new("varchar", "syntax-error")
        self.expect_error(
            "a syntax error in a statement with a canary literal",
            errors.ProgrammingError,
            lambda: run(f"INSERT INTO tour_det (id, c_varchar) VALUES (904, {sql_literal(text)}"),
        )
        text = self.book.new("varchar", "syntax-error-where")
        self.expect_error(
            "a syntax error after a canary comparison",
            errors.ProgrammingError,
            lambda: run(f"SELECT id FROM tour_det WHERE c_varchar = {sql_literal(text)} AND AND"),
        )
        self.expect_error(
            "a duplicate deterministic value (DuckDB echoes the key)",
            errors.IntegrityError,
            lambda: run(
                "INSERT INTO tour_det (id, c_varchar) VALUES (905, ?)", [det[100]["varchar"]]
            ),
        )
        self.expect_error(
            "a duplicate deterministic literal",
            errors.IntegrityError,
            lambda: run(
                "INSERT INTO tour_det (id, c_varchar) VALUES "
                f"(906, {sql_literal(det[101]['varchar'])})"
            ),
        )
        number = self.book.new("int", "unknown-column")
        self.expect_error(
            "an unknown column next to a canary",
            errors.ProgrammingError,
            lambda: run(f"SELECT id FROM tour_det WHERE c_int = {number} AND c_nope = 1"),
        )
        # Nothing a refusal touched was written.
        count = run("SELECT count(*) FROM tour_det WHERE id >= 900").fetchone()
        assert count == (0,), "a refused statement left rows behind"

    # Optional steps: they run by themselves once their feature lands.

    def enclave_steps(self) -> None:
        """Enclave queries on the randomized table (range, ORDER BY, grouping, aggregates)."""
        if not self.connection.enclave_available:
            self.result.skipped.append("enclave queries: connection.enclave_available is False")
            return
        rand = self.rows["tour_rand"]
        bound = sorted(row["bigint"] for row in rand.values())[2]
        found = self.cursor.execute(
            f"SELECT id FROM tour_rand WHERE c_bigint < {bound} ORDER BY c_bigint"
        ).fetchall()
        expected = [
            (identifier,)
            for identifier, row in sorted(rand.items(), key=lambda item: item[1]["bigint"])
            if row["bigint"] < bound  # type: ignore[operator]
        ]
        assert found == expected, "an enclave range query gave another answer than Python"
        self.cursor.execute("SELECT min(c_date), max(c_timestamp) FROM tour_rand").fetchall()
        self.cursor.execute(
            "SELECT c_varchar, count(*) FROM tour_rand GROUP BY c_varchar"
        ).fetchall()

    def rotation_steps(self) -> None:
        """Re-encrypt a column in place under another key, then read it back."""
        if importlib.util.find_spec("engine.client.rotation") is None:
            self.result.skipped.append("in-place re-encryption: engine.client.rotation is absent")
            return
        det = self.rows["tour_det"]
        try:
            self.cursor.execute(
                "ALTER TABLE tour_det ALTER COLUMN c_nvarchar NVARCHAR(80) "
                f"{_encrypted_with('cek_other', 'RANDOMIZED')}"
            )
        except errors.NotSupportedError as error:
            # The module can land before the statement is wired to it.
            if "not available yet" not in str(error):
                raise
            self.result.skipped.append("in-place re-encryption: ALTER COLUMN not wired yet")
            return
        got = dict(self.cursor.execute("SELECT id, c_nvarchar FROM tour_det").fetchall())
        assert got == {i: row["nvarchar"] for i, row in det.items()}, "rotation changed values"


def run_feature_tour(connection: Connection) -> TourResult:
    """Run every feature available today against ``connection`` (which must reach key files
    made by ``make_key_files``) and return its canaries and the errors it provoked.

    The connection stays open; the caller closes it and scans what is left.
    """
    result = TourResult()
    tour = _Tour(connection, result)
    tour.keys()
    tour.tables()
    tour.inserts()
    tour.read_back()
    tour.lookups()
    tour.joins_and_groups()
    tour.updates_and_deletes()
    tour.refusals()
    tour.enclave_steps()
    tour.rotation_steps()
    tour.read_back()
    return result
