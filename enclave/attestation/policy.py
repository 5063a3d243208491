"""The operator's attestation policy: parsed and validated from JSON before the service starts.

It turns `policy.json` into a frozen `Policy` and refuses unknown keys, bad hex and bad types with
a message that names the key. It must not verify evidence (that is `appraisal`) or open sockets.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from enclave.attestation.platform import platform_public_key

KNOWN_KEYS = (
    "allowed_measurements",
    "min_svn",
    "allow_debug",
    "trusted_platform_keys",
    "issuer",
)
REQUIRED_KEYS = ("allowed_measurements",)
_U32_MAX = 2**32 - 1


class PolicyError(ValueError):
    """The policy is invalid; the message names the key and says how to fix it."""


@dataclass(frozen=True)
class Policy:
    """What the service accepts: measurements (raw 32 bytes), minimum SVN, debug, platform keys."""

    allowed_measurements: frozenset[bytes]
    min_svn: int
    allow_debug: bool
    trusted_platform_keys: tuple[ec.EllipticCurvePublicKey, ...]
    issuer: str | None = None

    @classmethod
    def from_mapping(
        cls,
        data: Mapping[str, Any],
        *,
        base_dir: str | os.PathLike[str] | None = None,
        platform_dir: str | os.PathLike[str] | None = None,
    ) -> Policy:
        """Validate a decoded policy; relative key paths are taken from `base_dir`.

        When `trusted_platform_keys` is absent, the local simulated platform key (from
        `platform_dir`, default the platform directory) is trusted.

        >>> Policy.from_mapping({"allowed_measurements": ["ab"]})
        Traceback (most recent call last):
        ...
        enclave.attestation.policy.PolicyError: allowed_measurements[0] must be 64 hex digits \
(a SHA-256), got 2 characters
        """
        if not isinstance(data, Mapping):
            raise PolicyError("the policy must be a JSON object")
        unknown = sorted(set(data) - set(KNOWN_KEYS))
        if unknown:
            raise PolicyError(
                f"unknown policy key(s) {', '.join(unknown)}; the known keys are "
                f"{', '.join(KNOWN_KEYS)}"
            )
        for key in REQUIRED_KEYS:
            if key not in data:
                raise PolicyError(
                    f"the policy has no {key}; list the enclave measurements to trust"
                )
        measurements = _measurements(data["allowed_measurements"])
        min_svn = data.get("min_svn", 0)
        if (
            isinstance(min_svn, bool)
            or not isinstance(min_svn, int)
            or not 0 <= min_svn <= _U32_MAX
        ):
            raise PolicyError("min_svn must be an integer from 0 to 4294967295")
        allow_debug = data.get("allow_debug", False)
        if not isinstance(allow_debug, bool):
            raise PolicyError("allow_debug must be true or false")
        issuer = data.get("issuer")
        if issuer is not None and (not isinstance(issuer, str) or not issuer):
            raise PolicyError("issuer must be a non-empty string")
        if "trusted_platform_keys" in data:
            keys = _platform_keys(data["trusted_platform_keys"], base_dir)
        else:
            keys = (platform_public_key(platform_dir),)
        return cls(
            allowed_measurements=measurements,
            min_svn=min_svn,
            allow_debug=allow_debug,
            trusted_platform_keys=keys,
            issuer=issuer,
        )


def load_policy(
    path: str | os.PathLike[str], *, platform_dir: str | os.PathLike[str] | None = None
) -> Policy:
    """Read and validate a policy file; any problem raises `PolicyError` naming the file."""
    policy_path = Path(path)
    try:
        data = json.loads(policy_path.read_text(encoding="utf-8"))
    except OSError as error:
        raise PolicyError(f"cannot read policy {policy_path}: {error.strerror}") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise PolicyError(f"policy {policy_path} is not valid JSON: {error}") from None
    try:
        return Policy.from_mapping(data, base_dir=policy_path.parent, platform_dir=platform_dir)
    except PolicyError as error:
        raise PolicyError(f"policy {policy_path}: {error}") from None


def _measurements(value: Any) -> frozenset[bytes]:
    if not isinstance(value, list) or not value:
        raise PolicyError(
            "allowed_measurements must be a non-empty list of hex SHA-256 values, "
            "as printed by `enclavesql enclave-info --json`"
        )
    found = set()
    for index, item in enumerate(value):
        if not isinstance(item, str) or len(item) != 64:
            size = f"{len(item)} characters" if isinstance(item, str) else type(item).__name__
            raise PolicyError(
                f"allowed_measurements[{index}] must be 64 hex digits (a SHA-256), got {size}"
            )
        try:
            found.add(bytes.fromhex(item))
        except ValueError:
            raise PolicyError(
                f"allowed_measurements[{index}] has a character that is not a hex digit"
            ) from None
    return frozenset(found)


def _platform_keys(value: Any, base_dir: str | os.PathLike[str] | None) -> tuple[Any, ...]:
    if not isinstance(value, list) or not value:
        raise PolicyError(
            "trusted_platform_keys must be a non-empty list of PEM public keys or paths to them"
        )
    keys = []
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise PolicyError(f"trusted_platform_keys[{index}] must be a string")
        if item.lstrip().startswith("-----BEGIN"):
            pem = item.encode("ascii", errors="replace")
        else:
            key_path = Path(item)
            if not key_path.is_absolute() and base_dir is not None:
                key_path = Path(base_dir) / key_path
            try:
                pem = key_path.read_bytes()
            except OSError as error:
                raise PolicyError(
                    f"trusted_platform_keys[{index}]: cannot read {key_path}: {error.strerror}"
                ) from None
        try:
            key = serialization.load_pem_public_key(pem)
        except ValueError:
            raise PolicyError(
                f"trusted_platform_keys[{index}] is not a PEM public key "
                "(expected platform_key.pub.pem)"
            ) from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
            raise PolicyError(f"trusted_platform_keys[{index}] is not an ECDSA P-384 key")
        keys.append(key)
    return tuple(keys)
