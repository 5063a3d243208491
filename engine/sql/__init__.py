"""The pure SQL layer: parse, bind, classify and rewrite against a catalog snapshot into a plan.
It performs no I/O, opens no DuckDB and never calls the enclave."""
