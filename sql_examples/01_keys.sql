-- Keys. The demo made an RSA-3072 column master key in a PEM file with
--   enclavesql keys create-cmk --name clinic_cmk --provider PEM_FILE --key-path clinic_cmk.pem
-- Here the catalog learns where it lives. ENCLAVE_COMPUTATIONS without a SIGNATURE: the client
-- signs the key metadata itself. The CEK has no ENCRYPTED_VALUE: the client generates 32 random
-- bytes, wraps and signs them with the CMK, and the host receives only that envelope.
CREATE COLUMN MASTER KEY clinic_cmk WITH (
    KEY_STORE_PROVIDER_NAME = 'PEM_FILE',
    KEY_PATH = 'clinic_cmk.pem',
    ENCLAVE_COMPUTATIONS
);
CREATE COLUMN ENCRYPTION KEY clinic_cek WITH VALUES (
    COLUMN_MASTER_KEY = clinic_cmk,
    ALGORITHM = 'RSA_OAEP'
);
SELECT name, key_store_provider_name, key_path, allow_enclave_computations
FROM sys.column_master_keys;
SELECT k.name, v.encryption_algorithm_name, octet_length(v.encrypted_value) AS envelope_bytes
FROM sys.column_encryption_keys AS k
JOIN sys.column_encryption_key_values AS v USING (column_encryption_key_id);
