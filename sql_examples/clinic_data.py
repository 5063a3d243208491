"""Generates the clinic example dataset (patients and claims) deterministically from a seed.

It only makes plaintext Arrow tables for the examples and the demo; it never encrypts, never
connects to a database and never downloads anything.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np
import pyarrow as pa

FIRST_NAMES = (
    "Ada",
    "Alan",
    "Grace",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "Ken",
    "Margaret",
    "Niklaus",
    "Radia",
    "Tim",
    "Shafi",
    "Leslie",
    "Sophie",
    "Zoë",
    "Łukasz",
    "Ngozi",
    "Hiroshi",
    "Aarav",
)
LAST_NAMES = (
    "Lovelace",
    "Turing",
    "Hopper",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "Thompson",
    "Hamilton",
    "Wirth",
    "Perlman",
    "Berners-Lee",
    "Goldwasser",
    "Lamport",
    "Wilson",
    "Müller",
    "Okafor",
    "Tanaka",
    "Sharma",
    "García",
)
CITIES = ("Lisbon", "Nairobi", "Osaka", "Toronto", "Kraków", "Lima", "Pune", "Leeds")
# ICD-10 codes: type 2 diabetes, hypertension, asthma, migraine, back pain, anxiety, influenza.
DIAGNOSES = ("E11.9", "I10", "J45.909", "G43.909", "M54.5", "F41.1", "J10.1", "E78.5")
PROCEDURES = ("consultation", "blood panel", "x-ray", "mri", "vaccination", "physiotherapy")


def generate_patients(count: int = 5000, seed: int = 7) -> pa.Table:
    """Patients with a plaintext id, name and city, and the sensitive ssn, birth date, salary and
    diagnosis that the examples encrypt.

    >>> table = generate_patients(3)
    >>> table.column_names
    ['patient_id', 'name', 'city', 'ssn', 'birth_date', 'salary', 'diagnosis']
    >>> table.num_rows
    3
    """
    rng = np.random.default_rng(seed)
    first = rng.choice(FIRST_NAMES, count)
    last = rng.choice(LAST_NAMES, count)
    ssn_numbers = 100_000_000 + rng.choice(899_999_999, count, replace=False)
    birth_days = rng.integers(0, 365 * 80, count)
    salary_cents = rng.integers(1_800_000, 25_000_000, count)
    # A few unknown salaries and diagnoses: NULL is stored as NULL, visible to the host by design.
    salary_missing = rng.random(count) < 0.03
    diagnosis_missing = rng.random(count) < 0.05
    base = dt.date(1940, 1, 1)
    return pa.table(
        {
            "patient_id": pa.array(np.arange(1, count + 1), pa.int32()),
            "name": pa.array([f"{a} {b}" for a, b in zip(first, last, strict=True)]),
            "city": pa.array(rng.choice(CITIES, count)),
            "ssn": pa.array(
                [
                    f"{n // 1_000_000:03d}-{n // 10_000 % 100:02d}-{n % 10_000:04d}"
                    for n in ssn_numbers
                ]
            ),
            "birth_date": pa.array(
                [base + dt.timedelta(days=int(d)) for d in birth_days], pa.date32()
            ),
            "salary": pa.array(
                [
                    None if gone else Decimal(int(c)) / 100
                    for c, gone in zip(salary_cents, salary_missing, strict=True)
                ],
                pa.decimal128(10, 2),
            ),
            "diagnosis": pa.array(
                [
                    None if gone else d
                    for d, gone in zip(rng.choice(DIAGNOSES, count), diagnosis_missing, strict=True)
                ]
            ),
        }
    )


def generate_claims(patients: pa.Table, per_patient: float = 2.0, seed: int = 11) -> pa.Table:
    """Insurance claims that refer to patients by ssn (so a join runs on a deterministic column).

    >>> claims = generate_claims(generate_patients(10), per_patient=1.0)
    >>> claims.column_names
    ['claim_id', 'ssn', 'procedure', 'amount', 'claim_date']
    """
    rng = np.random.default_rng(seed)
    count = int(patients.num_rows * per_patient)
    owners = rng.integers(0, patients.num_rows, count)
    ssns = patients.column("ssn").take(pa.array(owners))
    amount_cents = rng.integers(2_000, 500_000, count)
    claim_days = rng.integers(0, 3 * 365, count)
    base = dt.date(2023, 1, 1)
    return pa.table(
        {
            "claim_id": pa.array(np.arange(1, count + 1), pa.int64()),
            "ssn": ssns,
            "procedure": pa.array(rng.choice(PROCEDURES, count)),
            "amount": pa.array([Decimal(int(c)) / 100 for c in amount_cents], pa.decimal128(10, 2)),
            "claim_date": pa.array(
                [base + dt.timedelta(days=int(d)) for d in claim_days], pa.date32()
            ),
        }
    )
