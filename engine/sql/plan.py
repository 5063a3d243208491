"""The plan that describe() returns: what to run, which values to encrypt, what to decrypt.

It is the equivalent of SQL Server's sp_describe_parameter_encryption answer, as frozen
dataclasses that can be cached per statement text and catalog version. It must hold no key
material and no plaintext of an encrypted column except literals the user wrote, which the
client encrypts before anything reaches the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from engine.errors import ProgrammingError
from engine.sql.catalog import ColumnEncryptionKeyValue, EncryptionType

__all__ = [
    "AddCekValue",
    "AggregateCall",
    "AggregateExpression",
    "ExpressionSlot",
    "EnclaveExecution",
    "CatalogChange",
    "CreateCek",
    "CreateCmk",
    "DropCek",
    "DropCekValue",
    "DropCmk",
    "DropEncryptedColumns",
    "ENCLAVE_ROLES",
    "EnclaveOperation",
    "EnclaveRole",
    "JoinStage",
    "GroupStage",
    "EncryptionTarget",
    "ImportCatalog",
    "ParameterSpec",
    "Plan",
    "PlanKind",
    "RegisterEncryptedColumn",
    "ResultColumn",
    "check_parameter_count",
]

PlanKind = Literal["query", "dml", "ddl", "key_ddl", "other"]


@dataclass(frozen=True)
class EncryptionTarget:
    """An encrypted column a value comes from or goes to: the client encrypts or decrypts with
    ``cek_name`` and ``encryption_type``, normalizing as ``declared_type`` says."""

    table: str
    column: str
    cek_name: str
    encryption_type: EncryptionType
    declared_type: str

    @property
    def label(self) -> str:
        """``table.column``, as error messages name it."""
        return f"{self.table}.{self.column}"

    def same_key(self, other: EncryptionTarget) -> bool:
        """True when a ciphertext of one is a valid ciphertext of the other."""
        return (
            self.cek_name.casefold() == other.cek_name.casefold()
            and self.encryption_type == other.encryption_type
            and self.declared_type == other.declared_type
        )


# The roles of the ``?`` markers that an enclave operation adds to the host's SQL: the query
# id (the host fills it in after begin_query), and the CEK id, type code, operator code and
# constant blob of one EnclaveOperation (the client fills those in; it owns the codes).
# "enclave_program" is the predicate program of one filter call (engine/predicate_program.py):
# the codes and constants of its operations, a tuple, in call order. The host swaps the blob for
# a small integer before DuckDB sees it (engine/host/enclave_udfs.py: DuckDB copies a constant
# argument into every vector of the scan).
EnclaveRole = Literal[
    "enclave_query",
    "enclave_cek",
    "enclave_type",
    "enclave_operator",
    "enclave_constant",
    "enclave_program",
]
ENCLAVE_ROLES: tuple[str, ...] = get_args(EnclaveRole)


@dataclass(frozen=True)
class ParameterSpec:
    """One ``?`` of ``Plan.sql``: ``("user", i)`` is the caller's i-th parameter (0-based) and
    ``("literal", value)`` a literal lifted out of the statement. ``target`` set means the
    client must encrypt the value for that column first. ``(role, operation)`` with a role of
    ENCLAVE_ROLES is a value of an enclave operation (see EnclaveRole)."""

    source: (
        tuple[Literal["user"], int]
        | tuple[Literal["literal"], Any]
        | tuple[EnclaveRole, EnclaveOperation | None]
        | tuple[Literal["enclave_program"], tuple[EnclaveOperation, ...]]
    )
    target: EncryptionTarget | None
    # True for a value compared (=, <>, IN) with an exact-numeric column: the client must not
    # round it to the column's type as it does a value stored (rewrite_inexact_comparisons).
    compared: bool = field(default=False, repr=False)
    # True for the tag of the cell this spec would otherwise be (engine.sql.tag_columns): the
    # client encrypts the value as for ``target`` and sends the cell's tag, a BIGINT.
    tag: bool = field(default=False, repr=False)


@dataclass(frozen=True)
class ResultColumn:
    """One output column; ``target`` set means it carries ciphertext the client decrypts."""

    name: str
    declared_type: str | None
    target: EncryptionTarget | None


@dataclass(frozen=True)
class ExpressionSlot:
    """One input of an enclave expression aggregate: an encrypted column (``target``) or a
    plaintext column (``target`` None) the host passes normalized; ``type_form`` is
    ``"INT64"``, ``"DECIMAL"`` or ``"FLOAT64"`` and ``scale`` the DECIMAL scale."""

    target: EncryptionTarget | None
    type_form: str
    scale: int = 0


@dataclass(frozen=True)
class AggregateExpression:
    """The arithmetic inside SUM or AVG, in postfix order: ``("slot", i)``, ``("exact", scale,
    unscaled)``, ``("float", value)``, ``("add",)``, ``("sub",)``, ``("mul",)`` or ``("neg",)``.
    ``is_float`` says the value is DOUBLE; otherwise it is exact at ``scale``, and ``integer``
    says every operand is an integer (DuckDB sums those into HUGEINT)."""

    slots: tuple[ExpressionSlot, ...]
    code: tuple[tuple[Any, ...], ...]
    is_float: bool
    scale: int
    integer: bool


@dataclass(frozen=True)
class EnclaveOperation:
    """An operation the enclave runs over ``target``'s cells in one statement.

    ``operator`` is the enclave operator's name (``"LT"``, ``"BETWEEN"``, ``"LIKE"``...) and
    ``type_form`` the NormalizationForm name of the column's plaintexts (``"INT64"``...); the
    client maps both to the contract's codes. ``operands`` are the sources of the values the
    client encrypts into the constant blob (``("user", i)`` or ``("literal", value)``), in the
    blob's order; empty for column-versus-column. ``escape`` is LIKE's ESCAPE character.
    An aggregate (SUM, AVG, MIN, MAX, COUNT_DISTINCT) names the index of the result column
    that holds its group's cells (``result_column``) and the declared type of its result; RANK
    (ORDER BY) and GROUP (GROUP BY, DISTINCT) name the stage-one column of their cells; so does
    TOP_K (ORDER BY ... LIMIT), whose operands are the sources of LIMIT and OFFSET, then the
    descending and NULLS FIRST flags as ``("fixed", 0 or 1)`` (a source of the rewrite's own
    making, like an absent OFFSET's ``("fixed", 0)``: not a literal of the text).
    ``stage`` says after which statement the host calls the enclave (2: ``Plan.finish_sql``).
    """

    target: EncryptionTarget
    operator: str
    type_form: str = ""
    operands: tuple[tuple[str, Any], ...] = ()
    escape: str | None = None
    construct: str = ""
    result_column: int | None = None
    result_type: str | None = None
    stage: int = 1
    # SUM_EXPR and AVG_EXPR: the arithmetic expression the enclave evaluates per row.
    expression: AggregateExpression | None = None
    # TOP_K: the stage-one column that holds the key's cells when it is a result column too
    # (``result_column`` is then a placeholder the ranks replace); None: result_column's own.
    source_column: int | None = None

    @property
    def column_versus_column(self) -> bool:
        """True for a comparison of two columns under the same key (no constant)."""
        return self.operator in ("EQ", "NE", "LT", "LE", "GT", "GE") and not self.operands


@dataclass(frozen=True)
class JoinStage:
    """Stage zero of an equi-JOIN on two enclave columns: each side's table read whole
    (``left_sql``, ``right_sql``), registered as ``left_view`` and ``right_view`` with the
    enclave's group ids over both sides' cells of ``left_column`` and ``right_column`` appended
    as ``__ee_gid``; ``operation`` is the GROUP operation (``result_column`` is the stage's
    number). Each side's read keeps only the rows that pass the statement's WHERE terms on that
    table alone, so the enclave sees fewer cells."""

    left_sql: str
    right_sql: str
    left_view: str
    right_view: str
    left_column: str
    right_column: str
    operation: EnclaveOperation
    # The statement's parameter values each side's read binds, by their index in
    # Plan.parameters (single-table WHERE terms pushed below the join, enclave ones included).
    left_parameters: tuple[int, ...] = ()
    right_parameters: tuple[int, ...] = ()


@dataclass(frozen=True)
class GroupStage:
    """Stage zero of GROUP BY or DISTINCT on enclave columns inside a subquery, a CTE or a set
    operation's branch: ``sql`` reads one table; the host appends the enclave's group ids over
    each of ``columns``' cells as the matching ``id_columns`` (one GROUP call per column, the
    matching ``operations``, whose ``result_column`` numbers the call) and registers the rows
    as ``view``, which the statement groups on."""

    sql: str
    view: str
    columns: tuple[str, ...]
    id_columns: tuple[str, ...]
    operations: tuple[EnclaveOperation, ...]
    # The statement's parameter values ``sql`` binds, by index in Plan.parameters (the grouped
    # SELECT's own WHERE terms on the table, read below it so the enclave sees fewer cells).
    parameters: tuple[int, ...] = ()


@dataclass(frozen=True)
class AggregateCall:
    """How the host calls the enclave for one column: an aggregate's lists of cells, or the
    cells of an ORDER BY column (``kind="rank"``, or ``"top_k"`` for the first key of ORDER BY
    ... LIMIT) or of a GROUP BY key (``kind="group"``), after
    ``stage`` 1 (``Plan.sql``) or 2 (``Plan.finish_sql``). The codes come from the client, which
    owns them, and the enclave checks them against the package's grants."""

    result_column: int
    cek_id: int
    type_code: int
    operator: int
    decimal_scale: int = 0
    kind: Literal["aggregate", "rank", "group", "top_k", "expression"] = "aggregate"
    stage: int = 1
    # The operator's constant blob where it has one (top_k: k, direction, NULLS placement),
    # exactly as the client authorized it.
    constant: bytes = b""
    # top_k: the column whose cells the enclave reads, when not result_column (see
    # EnclaveOperation.source_column).
    source_column: int | None = None


@dataclass(frozen=True)
class EnclaveExecution:
    """What the host needs beside the parameter values to run a plan with enclave operations:
    the session, the client's sealed package for ``Plan.sql``, and the aggregate calls."""

    session_id: int
    package: bytes
    aggregates: tuple[AggregateCall, ...] = ()

    def __repr__(self) -> str:
        # The package is opaque ciphertext; keep it out of logs and tracebacks all the same.
        return f"EnclaveExecution(session_id=..., package=<{len(self.package)} bytes>)"


@dataclass(frozen=True)
class CreateCmk:
    name: str
    key_store_provider_name: str
    key_path: str
    allow_enclave_computations: bool
    signature: bytes | None


@dataclass(frozen=True)
class DropCmk:
    name: str


@dataclass(frozen=True)
class CreateCek:
    """``values[i].encrypted_value`` is None where the client must generate and wrap the key."""

    name: str
    values: tuple[ColumnEncryptionKeyValue, ...]


@dataclass(frozen=True)
class AddCekValue:
    cek_name: str
    value: ColumnEncryptionKeyValue


@dataclass(frozen=True)
class DropCekValue:
    cek_name: str
    cmk_name: str


@dataclass(frozen=True)
class DropCek:
    name: str


@dataclass(frozen=True)
class RegisterEncryptedColumn:
    table: str
    column: str
    declared_type: str
    cek_name: str
    encryption_type: EncryptionType
    algorithm: str
    # The hidden tag column created with it (DETERMINISTIC columns of CREATE TABLE), if any.
    tag_column: str | None = None


@dataclass(frozen=True)
class DropEncryptedColumns:
    """Forget encryption metadata of ``columns`` of ``table`` (all of them when empty)."""

    table: str
    columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImportCatalog:
    """IMPORT DATABASE of ``directory``: when the export carries a catalog (schema sys), this
    database's own catalog must be empty, and it is replaced by the imported one."""

    directory: str


CatalogChange = (
    CreateCmk
    | DropCmk
    | CreateCek
    | AddCekValue
    | DropCekValue
    | DropCek
    | RegisterEncryptedColumn
    | DropEncryptedColumns
    | ImportCatalog
)


@dataclass(frozen=True)
class Plan:
    """What the host runs and the client must prepare for one statement.

    ``sql`` is None for key DDL (the host applies ``catalog_changes`` only).
    ``user_parameter_count`` is the number of ``?`` the caller wrote.
    ``parameterized_sql`` is set when enclave rewrites changed the text: the statement with
    literals lifted but not rewritten, which is what the client lets the host describe.
    ``finish_sql`` is set for ORDER BY over an enclave column: the second stage, which sorts
    and limits the rows of ``sql`` (with enclave ranks in place) registered as ``__ee_stage``.
    ``join_stages`` are the stage-zero reads of equi-JOINs on enclave columns, and
    ``group_stages`` those of grouping on enclave columns below the outermost SELECT.
    ``final_sql`` is stage three, after the aggregates of ``finish_sql``: HAVING and ORDER BY
    over enclave aggregates of groups whose key is an enclave column, read from ``__ee_stage``.
    ``native_operations`` are the (operation, column) pairs DuckDB runs on deterministic
    ciphertext (equality, IN, GROUP BY, DISTINCT, COUNT(DISTINCT), joins, set operations).
    """

    kind: PlanKind
    sql: str | None
    parameters: tuple[ParameterSpec, ...] = ()
    result_columns: tuple[ResultColumn, ...] = ()
    required_keys: tuple[str, ...] = ()
    enclave_operations: tuple[EnclaveOperation, ...] = ()
    catalog_version: int = 0
    catalog_changes: tuple[CatalogChange, ...] = ()
    user_parameter_count: int = 0
    parameterized_sql: str | None = None
    finish_sql: str | None = None
    join_stages: tuple[JoinStage, ...] = ()
    final_sql: str | None = None
    group_stages: tuple[GroupStage, ...] = ()
    native_operations: tuple[tuple[str, str], ...] = ()


def check_parameter_count(plan: Plan, parameters: Sequence[object]) -> None:
    """Raise ProgrammingError unless ``parameters`` has one value per ``?`` of the statement.

    >>> check_parameter_count(Plan("query", "SELECT ?", user_parameter_count=1), [])
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    engine.errors.ProgrammingError: the statement has 1 parameter marker(s) (?) but 0 value...
    """
    if len(parameters) != plan.user_parameter_count:
        raise ProgrammingError(
            f"the statement has {plan.user_parameter_count} parameter marker(s) (?) "
            f"but {len(parameters)} value(s) were given"
        )
