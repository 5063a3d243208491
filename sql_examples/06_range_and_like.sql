-- Range comparisons and LIKE on RANDOMIZED columns run in the enclave. The client encrypts each
-- constant under the column key and authorizes exactly that comparison for this one query; the
-- enclave answers with booleans, so the host learns which rows matched and nothing else.
SELECT COUNT(*) AS high_earners FROM patients WHERE salary > 150000;
SELECT patient_id, name, birth_date
FROM patients
WHERE birth_date BETWEEN DATE '1950-01-01' AND DATE '1950-03-31' AND city = 'Lisbon'
ORDER BY patient_id;
SELECT COUNT(*) AS respiratory FROM patients WHERE diagnosis LIKE 'J%';
SELECT COUNT(*) AS not_diabetes_or_asthma
FROM patients
WHERE diagnosis NOT IN ('E11.9', 'J45.909') OR diagnosis IS NULL;
