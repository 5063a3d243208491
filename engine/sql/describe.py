"""describe(): statement + snapshot in, a Plan out (sp_describe_parameter_encryption).

It runs the rules in order (qualify, bind, classify, parameterize, render) for statements that
touch encrypted tables and passes every other statement through unchanged. It is pure: no
I/O, no DuckDB, no enclave and no keys; the host executes the plan, the client prepares it.
"""

from __future__ import annotations

from dataclasses import replace

from sqlglot import exp

from engine.errors import NotSupportedError, ProgrammingError
from engine.sql.ae_nodes import KEY_DDL_NODES, AlterColumnEncryption, EncryptedWithColumnConstraint
from engine.sql.catalog import CatalogSnapshot
from engine.sql.classify_encrypted_operations import classify_encrypted_operations
from engine.sql.dialect import SOURCE_SQL, parse_statements, to_sql
from engine.sql.key_ddl import key_ddl_changes
from engine.sql.parameterize_literals import (
    number_user_placeholders,
    parameterize_literals,
    render_with_parameters,
)
from engine.sql.plan import (
    ENCLAVE_ROLES,
    EnclaveOperation,
    JoinStage,
    ParameterSpec,
    Plan,
    PlanKind,
    ResultColumn,
)
from engine.sql.qualify_columns import qualify_columns
from engine.sql.resolve_columns import origin, resolve_columns
from engine.sql.rewrite_describe_table import rewrite_describe_table
from engine.sql.rewrite_enclave_aggregates import AGGREGATE, rewrite_enclave_aggregates
from engine.sql.rewrite_enclave_grouping import (
    GROUP,
    RESULTS,
    STAGE_TWO_CALLS,
    rewrite_enclave_grouping,
)
from engine.sql.rewrite_enclave_having import bind_aggregate_constants, rewrite_enclave_having
from engine.sql.rewrite_enclave_joins import JOIN_STAGES, rewrite_enclave_joins
from engine.sql.rewrite_enclave_order import EXTRA, FINISH, RANK, rewrite_enclave_order
from engine.sql.rewrite_enclave_predicates import rewrite_enclave_predicates
from engine.sql.rewrite_encrypted_ddl import encrypted_ddl_changes, rewrite_encrypted_ddl

__all__ = ["describe", "describe_sql", "statement_kind"]

_DDL = (exp.Create, exp.Drop, exp.Alter, exp.TruncateTable)


def statement_kind(statement: exp.Expr) -> PlanKind:
    """The Plan kind of a statement.

    >>> statement_kind(parse_statements("BEGIN")[0])
    'other'
    """
    if isinstance(statement, KEY_DDL_NODES):
        return "key_ddl"
    if isinstance(statement, exp.Query):
        return "query"
    if isinstance(statement, (exp.Insert, exp.Update, exp.Delete, exp.Merge)):
        return "dml"
    if isinstance(statement, _DDL):
        return "ddl"
    return "other"


def _encrypted_tables(statement: exp.Expr, catalog: CatalogSnapshot) -> list[str]:
    names = []
    for table in statement.find_all(exp.Table):
        if table.db.casefold() == "sys":
            continue  # the host's catalog tables (sys.*) are plaintext, whatever their names
        if catalog.has_table(table.name) and catalog.table(table.name).encrypted:
            names.append(catalog.table(table.name).name)
    return sorted(set(names))


def _plain_plan(statement: exp.Expr, catalog: CatalogSnapshot) -> Plan:
    placeholders = [p for p in statement.find_all(exp.Placeholder) if p.this is None]
    return Plan(
        kind=statement_kind(statement),
        # Exactly as written when the parser kept the text: DuckDB's semantics, untouched.
        sql=str(statement.meta.get(SOURCE_SQL) or to_sql(statement)),
        parameters=tuple(ParameterSpec(("user", i), None) for i in range(len(placeholders))),
        catalog_version=catalog.version,
        user_parameter_count=len(placeholders),
    )


def _check_alter(statement: exp.Alter, catalog: CatalogSnapshot) -> exp.Alter:
    """ALTER TABLE on a table with encrypted columns: only ADD and DROP COLUMN are safe now."""
    table = statement.this.name if isinstance(statement.this, exp.Table) else ""
    info = catalog.table(table) if catalog.has_table(table) else None
    encrypted = {c.name.casefold() for c in info.columns if c.encryption} if info else set()
    statement = statement.copy()
    for action in list(statement.args.get("actions") or []):
        if isinstance(action, AlterColumnEncryption):
            name = action.this.name
            if name.casefold() in encrypted or action.args.get("encryption") is not None:
                raise NotSupportedError(
                    f"ALTER TABLE {table} ALTER COLUMN {name}: in-place encryption, decryption "
                    "and re-encryption are not available yet"
                )
            action.replace(exp.AlterColumn(this=action.this, dtype=action.args["dtype"]))
            continue
        if isinstance(action, (exp.ColumnDef, exp.Drop)):
            continue  # rewrite_encrypted_ddl and encrypted_ddl_changes handle these
        if not encrypted:
            continue
        names = {i.name.casefold() for i in action.find_all(exp.Identifier)}
        if names & encrypted or isinstance(action, exp.AlterRename):
            raise NotSupportedError(
                f"ALTER TABLE {table}: this change to a table with encrypted columns is not "
                "supported; only ADD COLUMN and DROP COLUMN are"
            )
    return statement


def _describe_table_ddl(statement: exp.Expr, catalog: CatalogSnapshot) -> Plan:
    if isinstance(statement, exp.Alter):
        statement = _check_alter(statement, catalog)
    changes = encrypted_ddl_changes(statement, catalog)
    rewritten = rewrite_encrypted_ddl(statement, catalog)
    return Plan(
        kind="ddl",
        sql=to_sql(rewritten),
        catalog_version=catalog.version,
        catalog_changes=changes,
    )


def describe(statement: exp.Expr, catalog: CatalogSnapshot, *, enclave_available: bool) -> Plan:
    """Bind, classify and rewrite one statement against ``catalog``.

    >>> from engine.sql.catalog import (
    ...     ColumnEncryptionKey, ColumnEncryptionKeyValue, ColumnInfo, ColumnMasterKey,
    ...     Encryption, TableInfo)
    >>> cek = ColumnEncryptionKey("cek1", (ColumnEncryptionKeyValue("cmk1", "RSA_OAEP", None),))
    >>> ssn = ColumnInfo("ssn", "CHAR(11)", Encryption("cek1", "DETERMINISTIC"))
    >>> snap = CatalogSnapshot(7, (ColumnMasterKey("cmk1", "PEM_FILE", "/k"),), (cek,),
    ...                        (TableInfo("p", (ColumnInfo("id", "INT"), ssn)),))
    >>> plan = describe(parse_statements("SELECT id FROM p WHERE ssn = '123'")[0], snap,
    ...                 enclave_available=False)
    >>> plan.sql
    'SELECT p.id AS id FROM p AS p WHERE p.ssn = ?'
    >>> plan.parameters[0].source, plan.parameters[0].target.label
    (('literal', '123'), 'p.ssn')
    """
    if isinstance(statement, KEY_DDL_NODES):
        return Plan(
            kind="key_ddl",
            sql=None,
            catalog_version=catalog.version,
            catalog_changes=key_ddl_changes(statement, catalog),
        )
    touched = _encrypted_tables(statement, catalog)
    declares = statement.find(EncryptedWithColumnConstraint, AlterColumnEncryption) is not None
    is_ctas = isinstance(statement, exp.Create) and isinstance(statement.expression, exp.Query)
    if is_ctas and touched and str(statement.args.get("kind") or "").upper() != "TABLE":
        raise NotSupportedError(
            f"views and other objects defined by a query over tables with encrypted columns "
            f"({', '.join(touched)}) are not supported; query the tables directly"
        )
    if isinstance(statement, (exp.Create, exp.Drop, exp.Alter)) and not is_ctas:
        kind = str(statement.args.get("kind") or "").upper()
        if kind == "TABLE" and (touched or declares):
            return _describe_table_ddl(statement, catalog)
    if not touched:
        if declares:
            raise NotSupportedError(
                "ENCRYPTED WITH is only allowed in CREATE TABLE and ALTER TABLE"
            )
        return _plain_plan(statement, catalog)
    described = rewrite_describe_table(statement, catalog)
    if described is not statement:
        return Plan(kind="query", sql=to_sql(described), catalog_version=catalog.version)
    kind = statement_kind(statement)
    if not (isinstance(statement, (exp.Query, exp.Insert, exp.Update, exp.Delete)) or is_ctas):
        raise NotSupportedError(
            f"this kind of statement ({type(statement).__name__.upper()}) cannot be used on "
            f"tables with encrypted columns ({', '.join(touched)})"
        )

    tree, user_count = number_user_placeholders(statement)
    tree = qualify_columns(tree, catalog)
    tree = resolve_columns(tree, catalog)
    if is_ctas:
        for projection in tree.expression.selects:
            target, _ = origin(projection)
            if target is not None:
                raise ProgrammingError(
                    f"CREATE TABLE ... AS SELECT would copy ciphertext of {target.label} into "
                    "a column with no encryption metadata; create the table with an ENCRYPTED "
                    "WITH column under the same key and use INSERT ... SELECT"
                )
    tree = classify_encrypted_operations(tree, catalog, enclave_available=enclave_available)
    tree = parameterize_literals(bind_aggregate_constants(tree))
    parameterized_sql: str | None = None
    join_stages: tuple[JoinStage, ...] = ()
    if enclave_available:
        joined = rewrite_enclave_joins(rewrite_enclave_aggregates(rewrite_enclave_having(tree)))
        join_stages = tuple(joined.meta.get(JOIN_STAGES, ()))
        rewritten = rewrite_enclave_predicates(
            rewrite_enclave_order(rewrite_enclave_grouping(joined))
        )
        if rewritten is not tree:
            # The text with literals lifted but before the enclave rewrite: what the client
            # sends the host to describe (the rewritten text is not valid input).
            parameterized_sql, _ = render_with_parameters(tree)
            tree = rewritten
    sql, parameters = render_with_parameters(tree)
    operations: list[EnclaveOperation] = []
    for spec in parameters:
        operation = spec.source[1] if spec.source[0] in ENCLAVE_ROLES else None
        if isinstance(operation, EnclaveOperation) and operation not in operations:
            operations.append(operation)

    result_columns: tuple[ResultColumn, ...] = ()
    if isinstance(tree, exp.Query):
        columns = []
        for projection in tree.selects:
            aggregate = projection.meta.get(AGGREGATE)
            if isinstance(aggregate, EnclaveOperation):
                # Before a RANK of the same column: the host ranks the aggregate's result cells.
                operations.append(aggregate)
            ranked = projection.meta.get(RANK) or projection.meta.get(GROUP)
            if isinstance(ranked, EnclaveOperation):
                operations.append(ranked)
            if projection.meta.get(EXTRA):
                continue  # a sort key or HAVING input of stage one, dropped by stage two
            target, declared = origin(projection)
            if isinstance(aggregate, EnclaveOperation):
                # Cells of the aggregate's result, under the column's key: the client decrypts
                # them as the result type.
                declared = aggregate.result_type
                target = replace(aggregate.target, declared_type=declared or "")
            columns.append(ResultColumn(projection.alias_or_name, declared, target))
        result_columns = tuple(columns)
        if RESULTS in tree.meta:
            # Grouping in stage two: its output, not stage one's, is what the client gets.
            result_columns = tuple(tree.meta[RESULTS])
            operations.extend(tree.meta[STAGE_TWO_CALLS])
    keys = {p.target.cek_name for p in parameters if p.target is not None}
    keys |= {c.target.cek_name for c in result_columns if c.target is not None}
    operations.extend(stage.operation for stage in join_stages)
    keys |= {operation.target.cek_name for operation in operations}
    return Plan(
        kind=kind,
        sql=sql,
        parameters=parameters,
        result_columns=result_columns,
        required_keys=tuple(sorted(keys)),
        enclave_operations=tuple(operations),
        catalog_version=catalog.version,
        user_parameter_count=user_count,
        parameterized_sql=parameterized_sql,
        finish_sql=tree.meta.get(FINISH) if isinstance(tree, exp.Select) else None,
        join_stages=join_stages,
    )


def describe_sql(sql_text: str, catalog: CatalogSnapshot, *, enclave_available: bool) -> list[Plan]:
    """Parse ``sql_text`` and describe each statement in order.

    >>> [p.kind for p in describe_sql("BEGIN; SELECT 1", CatalogSnapshot(1),
    ...                               enclave_available=False)]
    ['other', 'query']
    """
    return [
        describe(statement, catalog, enclave_available=enclave_available)
        for statement in parse_statements(sql_text)
    ]
