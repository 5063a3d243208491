-- Aggregates over encrypted columns run in the enclave, which returns each result encrypted under
-- the column key; only the client decrypts it, so the host never sees an average salary.
SELECT city, COUNT(*) AS patients, AVG(salary) AS average_salary, MAX(birth_date) AS youngest
FROM patients
GROUP BY city
ORDER BY city;
SELECT diagnosis, COUNT(*) AS patients, MIN(salary) AS lowest, MAX(salary) AS highest
FROM patients
GROUP BY diagnosis
ORDER BY diagnosis NULLS LAST;
