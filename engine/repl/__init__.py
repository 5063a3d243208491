"""The `enclavesql` interactive shell: statement splitting, dot commands, output modes, completion
and the prompt_toolkit session around them.

It talks to a database only through a PEP 249 connection (plus optional engine extensions looked
up with getattr); it must never open DuckDB itself or touch keys.
"""
