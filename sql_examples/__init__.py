"""Runnable examples on a generated clinic dataset; `python -m sql_examples` (make demo) runs them
in order. Nothing here is imported by the engine, and no example downloads anything."""
