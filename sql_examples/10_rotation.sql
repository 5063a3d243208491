-- Key rotation. CMK rotation re-wraps the same CEK under a new master key (the demo made
-- clinic_cmk_2027.pem), so no cell changes. CEK rotation re-encrypts a column under a new CEK
-- inside the enclave: the host hands ciphertext in and gets ciphertext back.
CREATE COLUMN MASTER KEY clinic_cmk_2027 WITH (
    KEY_STORE_PROVIDER_NAME = 'PEM_FILE',
    KEY_PATH = 'clinic_cmk_2027.pem',
    ENCLAVE_COMPUTATIONS
);
ALTER COLUMN ENCRYPTION KEY clinic_cek ADD VALUE (COLUMN_MASTER_KEY = clinic_cmk_2027, ALGORITHM = 'RSA_OAEP');
ALTER COLUMN ENCRYPTION KEY clinic_cek DROP VALUE (COLUMN_MASTER_KEY = clinic_cmk);
SELECT k.name AS cek, m.name AS wrapped_by
FROM sys.column_encryption_key_values AS v
JOIN sys.column_encryption_keys AS k USING (column_encryption_key_id)
JOIN sys.column_master_keys AS m USING (column_master_key_id);
CREATE COLUMN ENCRYPTION KEY salary_cek_2027 WITH VALUES (
    COLUMN_MASTER_KEY = clinic_cmk_2027,
    ALGORITHM = 'RSA_OAEP'
);
ALTER TABLE patients ALTER COLUMN salary DECIMAL(10,2) ENCRYPTED WITH (
    COLUMN_ENCRYPTION_KEY = salary_cek_2027,
    ENCRYPTION_TYPE = RANDOMIZED,
    ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256'
);
SELECT name, salary FROM patients WHERE ssn = '123-45-6789';
