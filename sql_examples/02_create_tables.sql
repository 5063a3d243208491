-- Tables. Sensitive columns carry ENCRYPTED WITH; DuckDB stores them as BLOB ciphertext and the
-- catalog keeps their declared type. ssn is DETERMINISTIC (equality, joins and grouping run on
-- ciphertext); the others are RANDOMIZED under an enclave-enabled key.
CREATE TABLE patients (
    patient_id INTEGER PRIMARY KEY,
    name VARCHAR,
    city VARCHAR,
    ssn VARCHAR ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = clinic_cek,
        ENCRYPTION_TYPE = DETERMINISTIC, ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256'),
    birth_date DATE ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = clinic_cek,
        ENCRYPTION_TYPE = RANDOMIZED, ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256'),
    salary DECIMAL(10,2) ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = clinic_cek,
        ENCRYPTION_TYPE = RANDOMIZED, ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256'),
    diagnosis VARCHAR ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = clinic_cek,
        ENCRYPTION_TYPE = RANDOMIZED, ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256')
);
CREATE TABLE claims (
    claim_id BIGINT PRIMARY KEY,
    ssn VARCHAR ENCRYPTED WITH (COLUMN_ENCRYPTION_KEY = clinic_cek,
        ENCRYPTION_TYPE = DETERMINISTIC, ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256'),
    procedure VARCHAR,
    amount DECIMAL(10,2),
    claim_date DATE
);
SELECT table_name, column_name, declared_type, encryption_type_desc
FROM sys.encrypted_columns
ORDER BY table_name, column_name;
