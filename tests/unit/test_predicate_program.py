"""The predicate program blob: what the client packs is what the filters unpack, and anything
else is refused with a clear InternalError (tests/e2e/test_native_predicates.py checks that the
native extension refuses the same blobs)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import InternalError
from engine.predicate_program import pack_predicates, unpack_predicates

_predicates = st.lists(
    st.tuples(
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFF),
        st.integers(0, 0xFF),
        st.binary(max_size=300),
    ),
    min_size=1,
    max_size=8,
)


@given(_predicates)
def test_a_packed_program_unpacks_to_the_same_predicates(predicates: list) -> None:
    blob = pack_predicates(predicates)
    assert unpack_predicates(blob, len(predicates)) == predicates


@given(_predicates, st.data())
def test_any_other_blob_is_refused(predicates: list, data: st.DataObject) -> None:
    blob = pack_predicates(predicates)
    cut = data.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(InternalError, match="malformed"):
        unpack_predicates(blob[:cut], len(predicates))  # truncated anywhere
    with pytest.raises(InternalError, match="malformed"):
        unpack_predicates(blob + b"\x00", len(predicates))  # trailing bytes
    with pytest.raises(InternalError, match="malformed"):
        unpack_predicates(blob, len(predicates) + 1)  # fewer predicates than the call has
    if len(predicates) > 1:
        with pytest.raises(InternalError, match="malformed"):
            unpack_predicates(blob, len(predicates) - 1)


@pytest.mark.parametrize(
    "predicate", [(0x10000, 1, 1, b""), (1, 256, 1, b""), (1, 1, -1, b""), (-1, 1, 1, b"")]
)
def test_codes_that_do_not_fit_are_refused_when_packing(predicate: tuple) -> None:
    with pytest.raises(InternalError, match="do not fit"):
        pack_predicates([predicate])


def test_module_doctests() -> None:
    """The examples of the program format and of the Python filter UDFs that read it run."""
    import doctest

    import engine.host.enclave_udfs
    import engine.predicate_program

    for module in (engine.predicate_program, engine.host.enclave_udfs):
        assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0
