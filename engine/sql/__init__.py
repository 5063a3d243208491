"""The pure SQL front end: AE dialect, catalog snapshot model, binder, classifier and plan.

Both the client and the host import it. It takes SQL text or an AST and a catalog snapshot
and returns a Plan; it must never do I/O, open DuckDB, call the enclave or touch keys.
"""

from __future__ import annotations

from engine.sql.catalog import (
    CatalogSnapshot,
    ColumnEncryptionKey,
    ColumnEncryptionKeyValue,
    ColumnInfo,
    ColumnMasterKey,
    Encryption,
    TableInfo,
)
from engine.sql.describe import describe, describe_sql
from engine.sql.dialect import EnclaveDuckDB, parse_statements, to_sql
from engine.sql.plan import (
    ENCLAVE_ROLES,
    AddCekValue,
    AggregateCall,
    CatalogChange,
    CreateCek,
    CreateCmk,
    DropCek,
    DropCekValue,
    DropCmk,
    DropEncryptedColumns,
    EnclaveExecution,
    EnclaveOperation,
    EnclaveRole,
    EncryptionTarget,
    GroupStage,
    JoinStage,
    ParameterSpec,
    Plan,
    RegisterEncryptedColumn,
    ResultColumn,
    check_parameter_count,
)

__all__ = [
    "ENCLAVE_ROLES",
    "AddCekValue",
    "AggregateCall",
    "CatalogChange",
    "CatalogSnapshot",
    "ColumnEncryptionKey",
    "ColumnEncryptionKeyValue",
    "ColumnInfo",
    "ColumnMasterKey",
    "CreateCek",
    "CreateCmk",
    "DropCek",
    "DropCekValue",
    "DropCmk",
    "DropEncryptedColumns",
    "EnclaveDuckDB",
    "EnclaveExecution",
    "EnclaveOperation",
    "EnclaveRole",
    "JoinStage",
    "GroupStage",
    "Encryption",
    "EncryptionTarget",
    "ParameterSpec",
    "Plan",
    "RegisterEncryptedColumn",
    "ResultColumn",
    "TableInfo",
    "check_parameter_count",
    "describe",
    "describe_sql",
    "parse_statements",
    "to_sql",
]
