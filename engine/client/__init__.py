"""The trusted client: key stores, CEK unwrapping, attestation checks, parameter encryption and
result decryption. It owns every secret outside the enclave and never opens DuckDB."""
