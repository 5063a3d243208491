"""The PEP 249 exception tree: shape, exports and pickling."""

from __future__ import annotations

import pickle

import pytest

import engine
from engine import errors

PEP249_TREE = {
    "Warning": Exception,
    "Error": Exception,
    "InterfaceError": errors.Error,
    "DatabaseError": errors.Error,
    "DataError": errors.DatabaseError,
    "OperationalError": errors.DatabaseError,
    "IntegrityError": errors.DatabaseError,
    "InternalError": errors.DatabaseError,
    "ProgrammingError": errors.DatabaseError,
    "NotSupportedError": errors.DatabaseError,
    "CellAuthenticationError": errors.DatabaseError,
    "AttestationError": errors.OperationalError,
    "EnclaveSessionError": errors.OperationalError,
}


@pytest.mark.parametrize(("name", "parent"), PEP249_TREE.items())
def test_tree_and_exports(name: str, parent: type) -> None:
    cls = getattr(engine, name)
    assert cls is getattr(errors, name)
    assert cls.__bases__ == (parent,)


@pytest.mark.parametrize("name", PEP249_TREE)
def test_errors_pickle(name: str) -> None:
    original = getattr(errors, name)("patients.ssn: something went wrong")
    restored = pickle.loads(pickle.dumps(original))
    assert type(restored) is type(original)
    assert str(restored) == str(original)


def test_cell_authentication_has_one_fixed_message() -> None:
    assert str(errors.CellAuthenticationError()) == errors.CellAuthenticationError.MESSAGE
    restored = pickle.loads(pickle.dumps(errors.CellAuthenticationError()))
    assert str(restored) == errors.CellAuthenticationError.MESSAGE


def test_module_globals() -> None:
    assert engine.apilevel == "2.0"
    assert engine.paramstyle == "qmark"
    assert engine.threadsafety in (0, 1, 2, 3)
