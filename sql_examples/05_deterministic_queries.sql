-- Equality, joins, grouping and counting on a DETERMINISTIC column run natively in DuckDB on the
-- ciphertext: equal plaintexts have equal cells under one key.
SELECT COUNT(*) AS patients, COUNT(DISTINCT ssn) AS distinct_ssns, COUNT(salary) AS known_salaries
FROM patients;
SELECT p.name, c.procedure, c.amount
FROM claims AS c
JOIN patients AS p ON p.ssn = c.ssn
WHERE p.patient_id = 42
ORDER BY c.amount DESC;
SELECT c.procedure, COUNT(DISTINCT c.ssn) AS patients
FROM claims AS c
GROUP BY c.procedure
ORDER BY patients DESC, c.procedure;
