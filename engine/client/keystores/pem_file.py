"""The PEM_FILE key store: a CMK is an RSA private key in a PEM file named by KEY_PATH.

It resolves key paths, loads keys lazily (one cached key object per path) and creates new key
files. It must never put key bytes or passwords in a message, and never accept a password from
SQL text: passwords come from a callback or the ENCLAVESQL_PEM_PASSWORD environment variable.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from engine.client.keystores.base import KeyStoreProvider, oaep_sha1
from engine.errors import CellAuthenticationError, OperationalError

__all__ = ["PemFileProvider", "PASSWORD_ENV"]

PASSWORD_ENV = "ENCLAVESQL_PEM_PASSWORD"

PasswordCallback = Callable[[str], "bytes | str | None"]


class PemFileProvider(KeyStoreProvider):
    """CMKs in PEM files (PKCS#8 or PKCS#1, optionally encrypted).

    Relative key paths resolve against `key_directory`, else the working directory.

    >>> import tempfile
    >>> directory = tempfile.mkdtemp()
    >>> provider = PemFileProvider(key_directory=directory)
    >>> provider.generate_key("cmk.pem", key_size=2048)
    >>> cek = bytes(range(32))
    >>> provider.unwrap_cek("cmk.pem", provider.wrap_cek("cmk.pem", cek)) == cek
    True
    """

    name = "PEM_FILE"

    def __init__(
        self,
        key_directory: str | os.PathLike[str] | None = None,
        password_callback: PasswordCallback | None = None,
    ) -> None:
        self._key_directory = Path(key_directory) if key_directory is not None else None
        self._password_callback = password_callback
        self._keys: dict[Path, rsa.RSAPrivateKey] = {}
        self._lock = threading.Lock()

    # --- key paths and loading ------------------------------------------------------------

    def resolve(self, key_path: str) -> Path:
        """The file a key path names: absolute as given, else under the key directory."""
        path = Path(key_path).expanduser()
        if path.is_absolute():
            return path
        return (self._key_directory or Path.cwd()) / path

    def _password(self, key_path: str) -> bytes | None:
        password: bytes | str | None = None
        if self._password_callback is not None:
            password = self._password_callback(key_path)
        if password is None:
            password = os.environ.get(PASSWORD_ENV)
        if isinstance(password, str):
            password = password.encode("utf-8")
        return password or None

    def _private_key(self, key_path: str) -> rsa.RSAPrivateKey:
        path = self.resolve(key_path)
        with self._lock:
            key = self._keys.get(path)
            if key is None:
                key = self._load(key_path, path)
                self._keys[path] = key
            return key

    def _load(self, key_path: str, path: Path) -> rsa.RSAPrivateKey:
        where = f"PEM_FILE key store: key file '{key_path}'"
        try:
            data = path.read_bytes()
        except OSError as error:
            raise OperationalError(
                f"{where} cannot be read ({error.strerror or type(error).__name__}, "
                f"looked at '{path}'); check KEY_PATH and the connection's key_dir"
            ) from None
        password = self._password(key_path)
        try:
            key = serialization.load_pem_private_key(data, password=password)
        except TypeError:
            # cryptography raises TypeError for "encrypted but no password" and the reverse.
            if password is None:
                raise OperationalError(
                    f"{where} is encrypted and no password was supplied; set "
                    f"{PASSWORD_ENV} or pass a password callback to the connection"
                ) from None
            key = self._load_unencrypted(where, data)
        except ValueError:
            raise OperationalError(
                f"{where} could not be loaded: the password is wrong or the file is not a PEM "
                "private key"
            ) from None
        except Exception:  # unsupported algorithms and the like
            raise OperationalError(
                f"{where} could not be loaded: the file is not a supported PEM private key"
            ) from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise OperationalError(
                f"{where} holds a {type(key).__name__.lstrip('_')} key, not an RSA key; a "
                "column master key must be RSA"
            )
        return key

    @staticmethod
    def _load_unencrypted(where: str, data: bytes) -> rsa.RSAPrivateKey:
        # A password was configured (for example globally) but this file is not encrypted.
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except Exception:
            raise OperationalError(
                f"{where} could not be loaded: the file is not a supported PEM private key"
            ) from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise OperationalError(f"{where} holds a non-RSA key; a column master key must be RSA")
        return key

    # --- primitives -----------------------------------------------------------------------

    def public_key(self, key_path: str) -> rsa.RSAPublicKey:
        return self._private_key(key_path).public_key()

    def rsa_oaep_sha1_decrypt(self, key_path: str, ciphertext: bytes) -> bytes:
        key = self._private_key(key_path)
        try:
            return key.decrypt(bytes(ciphertext), oaep_sha1())
        except ValueError:
            raise CellAuthenticationError() from None

    def sign_sha256_digest(self, key_path: str, digest: bytes) -> bytes:
        return self._private_key(key_path).sign(
            bytes(digest), padding.PKCS1v15(), Prehashed(hashes.SHA256())
        )

    # --- key creation ---------------------------------------------------------------------

    def generate_key(
        self,
        key_path: str,
        *,
        key_size: int = 3072,
        overwrite: bool = False,
        encrypt: bool = False,
    ) -> None:
        """Create a fresh RSA CMK at `key_path` as a PKCS#8 PEM file with mode 0600.

        An existing file is refused unless `overwrite`. With `encrypt`, the PEM is encrypted
        with the configured password (callback or ENCLAVESQL_PEM_PASSWORD).
        """
        path = self.resolve(key_path)
        where = f"PEM_FILE key store: key file '{key_path}'"
        encryption: serialization.KeySerializationEncryption = serialization.NoEncryption()
        if encrypt:
            password = self._password(key_path)
            if password is None:
                raise OperationalError(
                    f"{where}: encryption was requested but no password was supplied; set "
                    f"{PASSWORD_ENV}"
                )
            encryption = serialization.BestAvailableEncryption(password)
        if path.exists() and not overwrite:
            raise OperationalError(
                f"{where} already exists; choose another KEY_PATH or pass --force to replace it"
            )
        key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if overwrite:
                path.unlink(missing_ok=True)
            # O_EXCL with mode 0600 means the key is never readable by others, not even briefly.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
        except OSError as error:
            raise OperationalError(
                f"{where} cannot be written ({error.strerror or type(error).__name__}); check "
                "the directory and its permissions"
            ) from None
        with self._lock:
            self._keys[path] = key

    def close(self) -> None:
        with self._lock:
            self._keys.clear()
