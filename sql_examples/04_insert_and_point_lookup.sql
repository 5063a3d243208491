-- INSERT with literals, and a point lookup. The client turns every literal aimed at an encrypted
-- column into an encrypted parameter, so '123-45-6789' never reaches the host in plaintext
-- (SQL Server would reject these literals). The lookup runs in DuckDB on deterministic ciphertext.
INSERT INTO patients VALUES
    (5001, 'Ada Lovelace', 'London', '123-45-6789', DATE '1815-12-10', 99999.99, 'E11.9');
SELECT patient_id, name, city, birth_date, salary, diagnosis
FROM patients
WHERE ssn = '123-45-6789';
UPDATE patients SET salary = 120000.00 WHERE ssn = '123-45-6789';
SELECT name, salary FROM patients WHERE ssn IN ('123-45-6789', '000-00-0000');
