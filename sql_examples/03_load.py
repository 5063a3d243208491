"""Load: bulk-inserts the generated clinic dataset; the client encrypts in C batches, so the host
receives only ciphertext for the encrypted columns. It must not print any sensitive value."""

from __future__ import annotations

from typing import Any

from sql_examples.clinic_data import generate_claims, generate_patients

PATIENTS = 5000


def run(connection: Any, say: Any) -> None:
    patients = generate_patients(PATIENTS)
    claims = generate_claims(patients)
    say(f"bulk_insert('patients', <{patients.num_rows} rows>)")
    connection.bulk_insert("patients", patients)
    say(f"bulk_insert('claims', <{claims.num_rows} rows>)")
    connection.bulk_insert("claims", claims)
    connection.commit()
