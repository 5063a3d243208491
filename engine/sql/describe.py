"""describe(): statement + snapshot in, a Plan out (sp_describe_parameter_encryption).

It runs the rules in order (qualify, bind, classify, parameterize, render) for statements that
touch encrypted tables and passes every other statement through unchanged. It is pure: no
I/O, no DuckDB, no enclave and no keys; the host executes the plan, the client prepares it.
"""

from __future__ import annotations

from dataclasses import replace

from sqlglot import exp

from engine.errors import NotSupportedError, ProgrammingError
from engine.sql.ae_nodes import (
    KEY_DDL_NODES,
    AlterColumnEncryption,
    EncryptedWithColumnConstraint,
    ImportDatabase,
)
from engine.sql.catalog import CatalogSnapshot
from engine.sql.classify_encrypted_operations import (
    NATIVE_OPERATIONS,
    classify_encrypted_operations,
)
from engine.sql.dialect import SOURCE_SQL, parse_statements, to_sql
from engine.sql.encrypted_index import describe_create_index
from engine.sql.key_ddl import key_ddl_changes
from engine.sql.parameterize_literals import (
    number_user_placeholders,
    parameterize_literals,
    render_with_parameters,
)
from engine.sql.plan import (
    EnclaveOperation,
    GroupStage,
    ImportCatalog,
    JoinStage,
    ParameterSpec,
    Plan,
    PlanKind,
    ResultColumn,
)
from engine.sql.qualify_columns import qualify_columns
from engine.sql.resolve_columns import origin, resolve_columns
from engine.sql.result_names import mark_result_names, marked_result_names, name_result_columns
from engine.sql.rewrite_describe_table import rewrite_describe_table
from engine.sql.rewrite_enclave_aggregates import AGGREGATE, rewrite_enclave_aggregates
from engine.sql.rewrite_enclave_grouping import (
    FINAL,
    GROUP,
    RESULTS,
    STAGE_TWO_CALLS,
    rewrite_enclave_grouping,
)
from engine.sql.rewrite_enclave_having import bind_aggregate_constants, rewrite_enclave_having
from engine.sql.rewrite_enclave_joins import JOIN_STAGES, SIDE_READS, rewrite_enclave_joins
from engine.sql.rewrite_enclave_nested_grouping import (
    GROUP_STAGE_READS,
    GROUP_STAGES,
    rewrite_enclave_nested_grouping,
)
from engine.sql.rewrite_enclave_order import EXTRA, FINISH, RANK, rewrite_enclave_order
from engine.sql.rewrite_enclave_predicates import rewrite_enclave_predicates
from engine.sql.rewrite_enclave_ranges import rewrite_enclave_ranges
from engine.sql.rewrite_enclave_semi_joins import rewrite_enclave_semi_joins
from engine.sql.rewrite_enclave_set_operations import rewrite_enclave_set_operations
from engine.sql.rewrite_encrypted_ddl import encrypted_ddl_changes, rewrite_encrypted_ddl
from engine.sql.rewrite_inexact_comparisons import rewrite_inexact_comparisons
from engine.sql.rewrite_tag_lookups import rewrite_tag_lookups
from engine.sql.rewrite_tag_writes import rewrite_tag_writes

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


def _render_read(
    read: exp.Select, parameters: tuple[ParameterSpec, ...]
) -> tuple[str, tuple[int, ...]]:
    """A stage-zero read's text after the predicate rewrite, and for each of its ``?`` the
    index of an equal ``?`` of the statement (the same WHERE term, pushed down)."""
    text, specs = render_with_parameters(rewrite_enclave_predicates(read))
    if any(spec not in parameters for spec in specs):
        # A value the statement does not bind (a rewrite combined the terms differently):
        # read the table unfiltered, which only shows the enclave more cells.
        whole = read.copy()
        whole.set("where", None)
        return render_with_parameters(whole)[0], ()
    return text, tuple(parameters.index(spec) for spec in specs)


def _with_side_reads(
    stage: JoinStage,
    reads: tuple[exp.Select, exp.Select],
    parameters: tuple[ParameterSpec, ...],
) -> JoinStage:
    """The join stage with its side reads rendered after the predicate rewrite; each ``?`` of a
    read takes the value of an equal ``?`` of the statement (the same term, pushed down)."""
    rendered = [_render_read(read, parameters) for read in reads]
    return replace(
        stage,
        left_sql=rendered[0][0],
        right_sql=rendered[1][0],
        left_parameters=rendered[0][1],
        right_parameters=rendered[1][1],
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
    if isinstance(statement, ImportDatabase):
        # DDL with a catalog change, so that the host imports and adopts the exported catalog
        # in one transaction (docs/dbapi.md, "Export and import").
        return Plan(
            kind="ddl",
            sql=str(statement.meta.get(SOURCE_SQL) or to_sql(statement)),
            catalog_version=catalog.version,
            catalog_changes=(ImportCatalog(statement.name),),
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
    index = describe_create_index(statement, catalog)
    if index is not None:
        return index  # over deterministic ciphertext it leaks only equality, as the column does
    kind = statement_kind(statement)
    if not (isinstance(statement, (exp.Query, exp.Insert, exp.Update, exp.Delete)) or is_ctas):
        raise NotSupportedError(
            f"this kind of statement ({type(statement).__name__.upper()}) cannot be used on "
            f"tables with encrypted columns ({', '.join(touched)})"
        )

    tree, user_count = number_user_placeholders(mark_result_names(statement))
    tree = qualify_columns(tree, catalog)
    names = marked_result_names(tree)
    tree = resolve_columns(tree, catalog)
    tree = rewrite_inexact_comparisons(tree)
    if enclave_available:
        tree = rewrite_enclave_ranges(tree, catalog)
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
    native_operations = tree.meta[NATIVE_OPERATIONS]
    tree = parameterize_literals(bind_aggregate_constants(tree))
    parameterized_sql: str | None = None
    join_stages: tuple[JoinStage, ...] = ()
    side_reads: tuple[tuple[exp.Select, exp.Select], ...] = ()
    group_stages: tuple[GroupStage, ...] = ()
    group_reads: tuple[exp.Select, ...] = ()
    if enclave_available:
        joined = rewrite_enclave_semi_joins(
            rewrite_enclave_joins(rewrite_enclave_aggregates(rewrite_enclave_having(tree)))
        )
        join_stages = tuple(joined.meta.get(JOIN_STAGES, ()))
        side_reads = tuple(joined.meta.get(SIDE_READS, ()))
        joined = rewrite_enclave_nested_grouping(rewrite_enclave_set_operations(joined))
        group_stages = tuple(joined.meta.get(GROUP_STAGES, ()))
        group_reads = tuple(joined.meta.get(GROUP_STAGE_READS, ()))
        rewritten = rewrite_enclave_predicates(
            rewrite_enclave_order(rewrite_enclave_grouping(joined))
        )
        # rewrite_enclave_order adds the stage-zero reads of nested ORDER BY ... LIMIT.
        group_stages = tuple(rewritten.meta.get(GROUP_STAGES, group_stages))
        if rewritten is not tree:
            # The text with literals lifted but before the enclave rewrite: what the client
            # sends the host to describe (the rewritten text is not valid input).
            parameterized_sql, _ = render_with_parameters(tree)
            tree = rewritten
    tagged = rewrite_tag_writes(rewrite_tag_lookups(tree, catalog), catalog)
    if tagged is not tree:
        # As with the enclave rewrites, the host describes the text before the tag rewrite
        # (its tag columns are hidden from the catalog, so the rewritten text is not input).
        if parameterized_sql is None:
            parameterized_sql, _ = render_with_parameters(tree)
        tree = tagged
    sql, parameters = render_with_parameters(tree)
    join_stages = (
        tuple(
            _with_side_reads(stage, reads, parameters)
            for stage, reads in zip(join_stages, side_reads, strict=False)
        )
        + join_stages[len(side_reads) :]
    )
    # The first stages are rewrite_enclave_nested_grouping's, with their reads.
    group_stages = (
        tuple(
            replace(stage, sql=text, parameters=indices)
            for stage, (text, indices) in zip(
                group_stages, [_render_read(read, parameters) for read in group_reads], strict=False
            )
        )
        + group_stages[len(group_reads) :]
    )
    operations: list[EnclaveOperation] = []
    for spec in parameters:
        # Each occurrence of an enclave operation has exactly one CEK marker or one place in a
        # filter's program. Counting those, not distinct values, keeps a predicate written twice
        # with the same literal as two operations, as the host counts them (it sees each lifted
        # literal as its own ?).
        if spec.source[0] == "enclave_cek" and isinstance(spec.source[1], EnclaveOperation):
            operations.append(spec.source[1])
        elif spec.source[0] == "enclave_program" and isinstance(spec.source[1], tuple):
            operations.extend(spec.source[1])

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
    result_columns = name_result_columns(result_columns, names)
    keys = {p.target.cek_name for p in parameters if p.target is not None}
    keys |= {c.target.cek_name for c in result_columns if c.target is not None}
    operations.extend(stage.operation for stage in join_stages)
    operations.extend(op for stage in group_stages for op in stage.operations)
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
        final_sql=tree.meta.get(FINAL) if isinstance(tree, exp.Select) else None,
        group_stages=group_stages,
        native_operations=native_operations,
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
