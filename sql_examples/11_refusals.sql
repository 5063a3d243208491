-- Fail closed. What cannot run safely is refused before it runs, with an error that names the
-- column, the operation and what would allow it.
-- expect-error: ProgrammingError
SELECT name FROM patients WHERE ssn LIKE '123%';
-- expect-error: NotSupportedError
SELECT salary * 2 FROM patients;
