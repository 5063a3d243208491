-- Fail closed. What cannot run safely is refused before it runs, with an error that names the
-- column, the operation and what would allow it.
-- expect-error: ProgrammingError
SELECT MAX(ssn) FROM patients;
-- expect-error: NotSupportedError
SELECT salary * 2 FROM patients;
