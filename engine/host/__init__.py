"""The untrusted host: DuckDB, the catalog, execution and the glue to the enclave. It never holds
a plaintext CEK or a plaintext value of an encrypted column, and imports nothing from the client."""
