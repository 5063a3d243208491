-- In-place encryption of an existing plaintext column. The claims amounts were plaintext; the
-- client streams the column, encrypts it under clinic_cek and swaps it in within one transaction,
-- so a crash at any point leaves either the old column or the new one, never a mix.
ALTER TABLE claims ALTER COLUMN amount DECIMAL(10,2) ENCRYPTED WITH (
    COLUMN_ENCRYPTION_KEY = clinic_cek,
    ENCRYPTION_TYPE = RANDOMIZED,
    ALGORITHM = 'AEAD_AES_256_CBC_HMAC_SHA_256'
);
SELECT table_name, column_name, encryption_type_desc FROM sys.encrypted_columns
WHERE table_name = 'claims' ORDER BY column_name;
SELECT procedure, COUNT(*) AS claims, SUM(amount) AS total FROM claims GROUP BY procedure ORDER BY procedure;
