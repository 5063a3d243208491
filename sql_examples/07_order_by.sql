-- ORDER BY an encrypted column: the enclave ranks the cells and DuckDB sorts by the ranks, so the
-- host learns the order of the rows in this result (documented leakage) but no value.
SELECT name, city, salary FROM patients WHERE salary IS NOT NULL ORDER BY salary DESC LIMIT 5;
SELECT name, birth_date FROM patients ORDER BY birth_date, patient_id LIMIT 3;
