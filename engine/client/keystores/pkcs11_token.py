"""The PKCS11 key store: a CMK is an RSA key pair on a PKCS#11 token, named by a `pkcs11:` URI.

Private keys never leave the token: unwrapping uses the token's CKM_RSA_PKCS_OAEP (SHA-1) and
signing its CKM_RSA_PKCS over a SHA-256 DigestInfo. python-pkcs11 is optional and imported only
on first use. Messages name the URI with its pin-value redacted, never the PIN itself.
"""

from __future__ import annotations

import hmac
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from engine.client.keystores.base import KeyStoreProvider
from engine.client.keystores.pkcs11_uri import MODULE_ENV, Pkcs11Uri, parse_pkcs11_uri
from engine.errors import CellAuthenticationError, OperationalError

__all__ = ["Pkcs11Provider", "close_pkcs11_sessions"]

# RFC 8017 section 9.2 note 1: the DER DigestInfo prefix for SHA-256. CKM_RSA_PKCS signs exactly
# the bytes it is given, so prefixing the digest yields an RSASSA-PKCS1-v1_5 SHA-256 signature.
_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")

# PKCS#11 login state belongs to the whole process, per token: a second C_Login on a token that
# is already logged in fails with "already logged in" before the PIN is even checked. So sessions
# are shared process-wide, one per (module, token), and a different PIN closes the old session
# (logging the token out) before it is tried, so a wrong PIN can never ride on an earlier login.
_sessions: dict[tuple[str, str], tuple[Any, str | None]] = {}
_sessions_lock = threading.RLock()


def _load_pkcs11() -> Any:
    try:
        import pkcs11
    except ImportError:
        raise OperationalError(
            "the PKCS11 key store needs python-pkcs11: pip install 'enclavesql[pkcs11]'"
        ) from None
    return pkcs11


def close_pkcs11_sessions() -> None:
    """Close every cached token session (logging the tokens out)."""
    with _sessions_lock:
        for session, _pin in _sessions.values():
            try:
                session.close()
            except Exception:  # noqa: BLE001 - a session that is already gone is closed enough
                pass
        _sessions.clear()


class Pkcs11Provider(KeyStoreProvider):
    """CMKs on PKCS#11 tokens (SoftHSM2, HSMs, smart cards).

    A KEY_PATH comes from the database, which the client does not trust, and loading a PKCS#11
    module runs its code. So a module is loaded only if it is $ENCLAVESQL_PKCS11_MODULE or one
    of `allowed_modules` (compared after resolving symbolic links).
    """

    name = "PKCS11"

    def __init__(self, allowed_modules: Iterable[str | os.PathLike[str]] = ()) -> None:
        self._allowed_modules = tuple(os.fspath(module) for module in allowed_modules)
        self._public_keys: dict[tuple[str, str, str, bytes | None], rsa.RSAPublicKey] = {}

    def _module(self, uri: Pkcs11Uri) -> str:
        """The module for `uri`, refused unless the client allowed it."""
        module = uri.module()
        allowed = list(self._allowed_modules)
        if os.environ.get(MODULE_ENV):
            allowed.append(os.environ[MODULE_ENV])
        resolved = os.path.realpath(module)
        if not any(resolved == os.path.realpath(candidate) for candidate in allowed):
            raise OperationalError(
                f"PKCS11 key path '{uri.redacted}' names module-path '{module}', which this "
                "client has not allowed: a KEY_PATH comes from the database, and the database "
                f"must not choose code the client loads. Set {MODULE_ENV} to it or pass it in "
                "allowed_modules"
            )
        return module

    # --- sessions and objects -------------------------------------------------------------

    @contextmanager
    def _token_errors(self, uri: Pkcs11Uri, action: str) -> Iterator[None]:
        """Translate python-pkcs11 exceptions into OperationalError naming the redacted URI."""
        pkcs11 = _load_pkcs11()
        errors = pkcs11.exceptions
        where = f"PKCS11 key path '{uri.redacted}'"
        try:
            yield
        except (errors.PinIncorrect, errors.PinInvalid, errors.PinLenRange) as error:
            raise OperationalError(
                f"{where}: the token refused the PIN while trying to {action} "
                f"({type(error).__name__}); check pin-source or pin-value"
            ) from None
        except (errors.PinLocked, errors.PinExpired, errors.UserPinNotInitialized) as error:
            raise OperationalError(
                f"{where}: the token's user PIN cannot be used ({type(error).__name__}); "
                "reset or initialise it with the token's tools"
            ) from None
        except (errors.NoSuchToken, errors.TokenNotPresent, errors.MultipleTokensReturned) as error:
            raise OperationalError(
                f"{where}: no single token labelled as in the URI is present "
                f"({type(error).__name__}); check the token attribute and the module"
            ) from None
        except errors.NoSuchKey:
            raise OperationalError(
                f"{where}: the token holds no private key with this object label (and id); "
                "check the object attribute, and that a PIN is given so private objects show"
            ) from None
        except errors.MultipleObjectsReturned:
            raise OperationalError(
                f"{where}: several private keys match; add an id attribute to pick one"
            ) from None
        except (
            errors.MechanismInvalid,
            errors.MechanismParamInvalid,
            errors.KeyTypeInconsistent,
            errors.ArgumentsBad,
            errors.FunctionNotSupported,
        ) as error:
            raise OperationalError(
                f"{where}: the key or token cannot {action} ({type(error).__name__}); a CMK must "
                "be an RSA key allowed to decrypt with RSA-OAEP (SHA-1) and to sign"
            ) from None
        except errors.PKCS11Error as error:
            raise OperationalError(
                f"{where}: the token failed to {action} ({type(error).__name__})"
            ) from None

    def _session(self, uri: Pkcs11Uri) -> Any:
        pkcs11 = _load_pkcs11()
        module = self._module(uri)
        pin = uri.pin()
        cache_key = (module, uri.token)
        with _sessions_lock:
            cached = _sessions.get(cache_key)
            if cached is not None:
                session, cached_pin = cached
                if _same_pin(pin, cached_pin):
                    return session
                del _sessions[cache_key]
                session.close()
            try:
                library = pkcs11.lib(module)
            except Exception as error:  # noqa: BLE001 - dlopen and C_Initialize failures
                raise OperationalError(
                    f"PKCS11 key path '{uri.redacted}': the PKCS#11 module cannot be loaded "
                    f"({type(error).__name__}); check module-path or ENCLAVESQL_PKCS11_MODULE"
                ) from None
            with self._token_errors(uri, "open a session"):
                token = library.get_token(token_label=uri.token)
                session = token.open(rw=True, user_pin=pin)
            _sessions[cache_key] = (session, pin)
            return session

    def _private_key(self, session: Any, uri: Pkcs11Uri) -> Any:
        pkcs11 = _load_pkcs11()
        key = session.get_key(
            object_class=pkcs11.ObjectClass.PRIVATE_KEY, label=uri.object, id=uri.id
        )
        if key.key_type != pkcs11.KeyType.RSA:
            raise OperationalError(
                f"PKCS11 key path '{uri.redacted}' names a {key.key_type.name} key; a column "
                "master key must be RSA"
            )
        return key

    # --- primitives -----------------------------------------------------------------------

    def public_key(self, key_path: str) -> rsa.RSAPublicKey:
        pkcs11 = _load_pkcs11()
        uri = parse_pkcs11_uri(key_path)
        cache_key = (self._module(uri), uri.token, uri.object, uri.id)
        cached = self._public_keys.get(cache_key)
        if cached is not None:
            return cached
        with _sessions_lock, self._token_errors(uri, "read the public key"):
            key = self._private_key(self._session(uri), uri)
            # RSA private key objects carry the public modulus and exponent (PKCS#11 2.1.3).
            modulus = key[pkcs11.Attribute.MODULUS]
            exponent = key[pkcs11.Attribute.PUBLIC_EXPONENT]
        public = rsa.RSAPublicNumbers(
            int.from_bytes(exponent, "big"), int.from_bytes(modulus, "big")
        ).public_key()
        self._public_keys[cache_key] = public
        return public

    def rsa_oaep_sha1_decrypt(self, key_path: str, ciphertext: bytes) -> bytes:
        pkcs11 = _load_pkcs11()
        errors = pkcs11.exceptions
        uri = parse_pkcs11_uri(key_path)
        with _sessions_lock, self._token_errors(uri, "unwrap with RSA-OAEP"):
            key = self._private_key(self._session(uri), uri)
            try:
                return bytes(
                    key.decrypt(
                        bytes(ciphertext),
                        mechanism=pkcs11.Mechanism.RSA_PKCS_OAEP,
                        mechanism_param=(pkcs11.Mechanism.SHA_1, pkcs11.MGF.SHA1, None),
                    )
                )
            except (
                errors.EncryptedDataInvalid,
                errors.EncryptedDataLenRange,
                errors.DataInvalid,
                errors.DataLenRange,
                errors.GeneralError,  # SoftHSM2's answer to bad OAEP padding
            ):
                raise CellAuthenticationError() from None

    def sign_sha256_digest(self, key_path: str, digest: bytes) -> bytes:
        pkcs11 = _load_pkcs11()
        uri = parse_pkcs11_uri(key_path)
        with _sessions_lock, self._token_errors(uri, "sign"):
            key = self._private_key(self._session(uri), uri)
            return bytes(
                key.sign(_SHA256_DIGEST_INFO + bytes(digest), mechanism=pkcs11.Mechanism.RSA_PKCS)
            )

    def envelope_key_path(self, key_path: str) -> str:
        # The envelope is stored in the catalog; a PIN must never be written there.
        return parse_pkcs11_uri(key_path).without_pin_value()

    # --- key creation ---------------------------------------------------------------------

    def generate_key(self, key_path: str, *, key_size: int = 3072, overwrite: bool = False) -> None:
        """Generate an RSA key pair ON the token: private key sensitive and not extractable."""
        pkcs11 = _load_pkcs11()
        attribute = pkcs11.Attribute
        uri = parse_pkcs11_uri(key_path)
        with _sessions_lock, self._token_errors(uri, "generate a key pair"):
            session = self._session(uri)
            search: dict[Any, Any] = {attribute.LABEL: uri.object}
            if uri.id is not None:
                search[attribute.ID] = uri.id
            existing = [
                item
                for item in session.get_objects(search)
                if item[attribute.CLASS]
                in (pkcs11.ObjectClass.PRIVATE_KEY, pkcs11.ObjectClass.PUBLIC_KEY)
            ]
            if existing and not overwrite:
                raise OperationalError(
                    f"PKCS11 key path '{uri.redacted}': the token already holds a key with this "
                    "object label; choose another object or pass --force to replace it"
                )
            for item in existing:
                item.destroy()
            session.generate_keypair(
                pkcs11.KeyType.RSA,
                key_size,
                label=uri.object,
                id=uri.id,
                store=True,
                public_template={
                    attribute.ENCRYPT: True,
                    attribute.VERIFY: True,
                },
                private_template={
                    attribute.SENSITIVE: True,
                    attribute.EXTRACTABLE: False,
                    attribute.PRIVATE: True,
                    attribute.DECRYPT: True,
                    attribute.SIGN: True,
                },
            )
        self._public_keys.clear()

    def close(self) -> None:
        self._public_keys.clear()
        close_pkcs11_sessions()


def _same_pin(left: str | None, right: str | None) -> bool:
    if left is None or right is None:
        return left is right
    return hmac.compare_digest(left.encode("utf-8"), right.encode("utf-8"))
