"""The enclave package: the cffi build script, the binding (the only importer of the compiled
module) and, later, the attestation service. It never holds keys on behalf of the host."""
