-- Fail closed. What cannot run safely is refused before it runs, with an error that names the
-- column, the operation and what would allow it.
-- expect-error: NotSupportedError
SELECT name FROM patients WHERE ssn ILIKE '123%';
-- expect-error: NotSupportedError
SELECT salary * 2 FROM patients;
