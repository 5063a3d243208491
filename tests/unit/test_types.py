"""engine.types: parsing declared types, canonical spellings, aliases and errors."""

from __future__ import annotations

import doctest
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

import engine.types
from engine.errors import NotSupportedError, ProgrammingError
from engine.types import (
    NormalizationForm,
    SqlType,
    TypeCategory,
    parse_sql_type,
    supported_type_names,
)

CANONICAL = [
    # written, canonical, duckdb type, arrow type, category, form
    ("bit", "BOOLEAN", "BOOLEAN", pa.bool_(), TypeCategory.BOOLEAN, NormalizationForm.INT64),
    ("Bool", "BOOLEAN", "BOOLEAN", pa.bool_(), TypeCategory.BOOLEAN, NormalizationForm.INT64),
    ("int1", "TINYINT", "TINYINT", pa.int8(), TypeCategory.INTEGER, NormalizationForm.INT64),
    ("short", "SMALLINT", "SMALLINT", pa.int16(), TypeCategory.INTEGER, NormalizationForm.INT64),
    ("INT", "INTEGER", "INTEGER", pa.int32(), TypeCategory.INTEGER, NormalizationForm.INT64),
    ("int8", "BIGINT", "BIGINT", pa.int64(), TypeCategory.INTEGER, NormalizationForm.INT64),
    ("uint8", "UTINYINT", "UTINYINT", pa.uint8(), TypeCategory.INTEGER, NormalizationForm.INT64),
    ("ubigint", "UBIGINT", "UBIGINT", pa.uint64(), TypeCategory.INTEGER, NormalizationForm.INT64),
    ("float", "REAL", "FLOAT", pa.float32(), TypeCategory.FLOATING, NormalizationForm.FLOAT32),
    ("float4", "REAL", "FLOAT", pa.float32(), TypeCategory.FLOATING, NormalizationForm.FLOAT32),
    (
        "double  precision",
        "DOUBLE",
        "DOUBLE",
        pa.float64(),
        TypeCategory.FLOATING,
        NormalizationForm.FLOAT64,
    ),
    (
        "numeric(10, 2)",
        "DECIMAL(10,2)",
        "DECIMAL(10,2)",
        pa.decimal128(10, 2),
        TypeCategory.DECIMAL,
        NormalizationForm.DECIMAL,
    ),
    (
        "decimal",
        "DECIMAL(18,3)",
        "DECIMAL(18,3)",
        pa.decimal128(18, 3),
        TypeCategory.DECIMAL,
        NormalizationForm.DECIMAL,
    ),
    (
        "DECIMAL(7)",
        "DECIMAL(7,0)",
        "DECIMAL(7,0)",
        pa.decimal128(7, 0),
        TypeCategory.DECIMAL,
        NormalizationForm.DECIMAL,
    ),
    ("date", "DATE", "DATE", pa.date32(), TypeCategory.TEMPORAL, NormalizationForm.DATE),
    ("time", "TIME", "TIME", pa.time64("us"), TypeCategory.TEMPORAL, NormalizationForm.TIME),
    ("time(7)", "TIME", "TIME", pa.time64("us"), TypeCategory.TEMPORAL, NormalizationForm.TIME),
    (
        "time(3)",
        "TIME(3)",
        "TIME",
        pa.time64("us"),
        TypeCategory.TEMPORAL,
        NormalizationForm.TIME,
    ),
    (
        "datetime2",
        "TIMESTAMP",
        "TIMESTAMP",
        pa.timestamp("us"),
        TypeCategory.TEMPORAL,
        NormalizationForm.DATETIME2,
    ),
    (
        "DATETIME",
        "TIMESTAMP",
        "TIMESTAMP",
        pa.timestamp("us"),
        TypeCategory.TEMPORAL,
        NormalizationForm.DATETIME2,
    ),
    (
        "timestamp with time zone",
        "TIMESTAMPTZ",
        "TIMESTAMP WITH TIME ZONE",
        pa.timestamp("us", tz="UTC"),
        TypeCategory.TEMPORAL,
        NormalizationForm.DATETIMEOFFSET,
    ),
    (
        "datetimeoffset(3)",
        "TIMESTAMPTZ(3)",
        "TIMESTAMP WITH TIME ZONE",
        pa.timestamp("us", tz="UTC"),
        TypeCategory.TEMPORAL,
        NormalizationForm.DATETIMEOFFSET,
    ),
    ("text", "VARCHAR", "VARCHAR", pa.string(), TypeCategory.STRING, NormalizationForm.UTF8),
    (
        "char(10)",
        "VARCHAR(10)",
        "VARCHAR",
        pa.string(),
        TypeCategory.STRING,
        NormalizationForm.UTF8,
    ),
    (
        "nvarchar(50)",
        "NVARCHAR(50)",
        "VARCHAR",
        pa.string(),
        TypeCategory.STRING,
        NormalizationForm.UTF16LE,
    ),
    (
        "NVARCHAR(MAX)",
        "NVARCHAR",
        "VARCHAR",
        pa.string(),
        TypeCategory.STRING,
        NormalizationForm.UTF16LE,
    ),
    ("nchar", "NVARCHAR", "VARCHAR", pa.string(), TypeCategory.STRING, NormalizationForm.UTF16LE),
    ("bytea", "BLOB", "BLOB", pa.binary(), TypeCategory.BINARY, NormalizationForm.BYTES),
    (
        "varbinary(16)",
        "BLOB(16)",
        "BLOB",
        pa.binary(),
        TypeCategory.BINARY,
        NormalizationForm.BYTES,
    ),
    (
        "uniqueidentifier",
        "UUID",
        "UUID",
        pa.uuid(),
        TypeCategory.UUID,
        NormalizationForm.GUID,
    ),
]


@pytest.mark.parametrize(
    ("written", "canonical", "duckdb_type", "arrow_type", "category", "form"),
    CANONICAL,
    ids=[row[0] for row in CANONICAL],
)
def test_parse_gives_canonical_form_and_properties(
    written: str,
    canonical: str,
    duckdb_type: str,
    arrow_type: pa.DataType,
    category: TypeCategory,
    form: NormalizationForm,
) -> None:
    parsed = parse_sql_type(written)
    assert str(parsed) == canonical
    assert parsed.canonical == canonical
    assert parsed.duckdb_type == duckdb_type
    assert parsed.arrow_type == arrow_type
    assert parsed.category is category
    assert parsed.form is form
    assert parse_sql_type(canonical) == parsed


@pytest.mark.parametrize("written", [row[0] for row in CANONICAL])
def test_duckdb_accepts_the_plaintext_type_and_exports_the_arrow_type(written: str) -> None:
    # DuckDB is the oracle: the plaintext type exists and exports as our Arrow type.
    parsed = parse_sql_type(written)
    connection = duckdb.connect()
    try:
        connection.execute("SET TimeZone = 'UTC'")
        # Without lossless conversion DuckDB exports UUID as text; with it BOOLEAN becomes bool8.
        lossless = parsed.name == "UUID"
        connection.execute(f"SET arrow_lossless_conversion = {lossless}")
        query = f"SELECT CAST(NULL AS {parsed.duckdb_type}) AS v"
        table = connection.sql(query).to_arrow_table()
    finally:
        connection.close()
    exported = table.schema.field("v").type
    assert exported == parsed.arrow_type


@given(st.sampled_from(supported_type_names()), st.booleans())
def test_every_alias_parses_case_insensitively(name: str, lower: bool) -> None:
    parsed = parse_sql_type(name.lower() if lower else name)
    assert parse_sql_type(str(parsed)) == parsed


@given(
    precision=st.integers(1, 38),
    data=st.data(),
    spaces=st.sampled_from(["", " ", "  "]),
)
def test_decimal_parameters_round_trip(precision: int, data: st.DataObject, spaces: str) -> None:
    scale = data.draw(st.integers(0, precision))
    parsed = parse_sql_type(f"decimal{spaces}({precision},{spaces}{scale})")
    assert (parsed.precision, parsed.scale) == (precision, scale)
    assert str(parsed) == f"DECIMAL({precision},{scale})"
    assert parsed.normalized_width == 17


def test_fixed_widths_follow_the_spec() -> None:
    widths = {
        "INTEGER": 8,
        "BOOLEAN": 8,
        "REAL": 4,
        "DOUBLE": 8,
        "DATE": 3,
        "TIME": 5,
        "TIMESTAMP": 8,
        "TIMESTAMPTZ": 10,
        "UUID": 16,
        "VARCHAR": None,
        "NVARCHAR": None,
        "BLOB": None,
    }
    for name, width in widths.items():
        assert parse_sql_type(name).normalized_width == width, name


@pytest.mark.parametrize(
    "written",
    [
        "HUGEINT",
        "UHUGEINT",
        "INTERVAL",
        "JSON",
        "INTEGER[]",
        "STRUCT(a INTEGER)",
        "MAP(VARCHAR, INTEGER)",
        "VARCHAR[3]",
        "MONEY",
        "SMALLDATETIME",
        "XML",
        "TIMETZ",
        "TIMESTAMP_NS",
        "",
        "   ",
        "NOT A TYPE !",
    ],
)
def test_unsupported_types_raise_not_supported_naming_the_type(written: str) -> None:
    with pytest.raises(NotSupportedError) as raised:
        parse_sql_type(written)
    message = str(raised.value)
    assert "not supported" in message
    assert "DECIMAL" in message and "NVARCHAR" in message  # the list of supported types
    if written.strip():
        first_word = written.split("(")[0].split("[")[0].split()[0]
        assert first_word.upper() in message


@pytest.mark.parametrize(
    "written",
    [
        "DECIMAL(39,2)",
        "DECIMAL(0)",
        "DECIMAL(5,6)",
        "DECIMAL(10,2,1)",
        "DECIMAL(x)",
        "DECIMAL(MAX)",
        "INTEGER(5)",
        "TIME(8)",
        "DATETIME2(3,1)",
        "NVARCHAR(0)",
        "VARCHAR(10,2)",
        "UUID(16)",
    ],
)
def test_bad_parameters_raise_programming_error(written: str) -> None:
    with pytest.raises(ProgrammingError):
        parse_sql_type(written)


def test_direct_construction_is_validated() -> None:
    with pytest.raises(NotSupportedError):
        SqlType("HUGEINT")
    with pytest.raises(ProgrammingError):
        SqlType("DECIMAL")
    with pytest.raises(ProgrammingError):
        SqlType("INTEGER", scale=2)
    assert SqlType("TIME", scale=3) == parse_sql_type("time(3)")


def test_non_text_raises_programming_error() -> None:
    with pytest.raises(ProgrammingError):
        parse_sql_type(42)  # type: ignore[arg-type]


def test_sql_type_is_frozen_and_hashable() -> None:
    parsed = parse_sql_type("DECIMAL(10,2)")
    with pytest.raises(AttributeError):
        parsed.scale = 3  # type: ignore[misc]
    assert len({parsed, parse_sql_type("numeric(10,2)")}) == 1


def test_module_doctests_pass() -> None:
    result = doctest.testmod(engine.types)
    assert result.attempted > 0 and result.failed == 0


DOCS = Path(__file__).resolve().parents[2] / "docs" / "types.md"


def test_docs_table_lists_every_type_and_alias() -> None:
    text = DOCS.read_text(encoding="utf-8")
    table = [line for line in text.splitlines() if line.startswith("| `")]
    documented = " ".join(table).upper()
    for name in supported_type_names():
        assert f"`{name}" in documented, f"docs/types.md does not list {name}"
    for row in table:
        canonical = row.split("`")[1].replace("(p,s)", "(10,2)")
        parsed = parse_sql_type(canonical)
        assert str(parsed.arrow_type).split("(")[0].replace(" ", "") in row.replace(" ", "")
        assert f"`{parsed.duckdb_type.split('(')[0]}" in row


def test_docs_example_runs() -> None:
    pytest.importorskip("enclave.binding", reason="the native codec (enclave.binding) is not built")
    text = DOCS.read_text(encoding="utf-8")
    example = text.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(example, str(DOCS), "exec"), {})  # noqa: S102 - our own documentation
