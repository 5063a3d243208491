"""The simulated platform key: an ECDSA P-384 key pair on disk that stands in for the CPU's.

It creates and loads `platform_key.pem` (mode 0600) and `platform_key.pub.pem` in the platform
directory, the same layout the C enclave uses. It must not pretend to be a hardware root of trust:
anyone who can read `platform_key.pem` can forge evidence, so it protects the protocol logic only.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

PLATFORM_DIR_ENV = "ENCLAVESQL_PLATFORM_DIR"
PRIVATE_KEY_FILE = "platform_key.pem"
PUBLIC_KEY_FILE = "platform_key.pub.pem"


def default_platform_dir() -> Path:
    """The platform directory: `$ENCLAVESQL_PLATFORM_DIR`, else ~/.local/share/enclavesql/platform.

    >>> import os
    >>> os.environ[PLATFORM_DIR_ENV] = "/tmp/example-platform"
    >>> str(default_platform_dir())
    '/tmp/example-platform'
    >>> del os.environ[PLATFORM_DIR_ENV]
    """
    override = os.environ.get(PLATFORM_DIR_ENV)
    if override:
        return Path(override)
    return Path.home() / ".local" / "share" / "enclavesql" / "platform"


def load_or_create_platform_key(
    directory: str | os.PathLike[str] | None = None,
) -> ec.EllipticCurvePrivateKey:
    """Load the platform private key, creating the key pair on first use.

    The private key is written with mode 0600 from the start (never chmod-ed after the fact), and
    the public key beside it, so a policy can trust the public file without reading the secret.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as directory:
    ...     key = load_or_create_platform_key(directory)
    ...     again = load_or_create_platform_key(directory)
    ...     same = key.public_key() == again.public_key()
    ...     mode = oct((Path(directory) / PRIVATE_KEY_FILE).stat().st_mode & 0o777)
    >>> key.curve.name, same, mode
    ('secp384r1', True, '0o600')
    """
    folder = Path(directory) if directory is not None else default_platform_dir()
    private_path = folder / PRIVATE_KEY_FILE
    public_path = folder / PUBLIC_KEY_FILE
    if private_path.exists():
        key = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp384r1":
            raise ValueError(
                f"{private_path} is not an ECDSA P-384 private key; move it aside so a new "
                "platform key can be created"
            )
    else:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = ec.generate_private_key(ec.SECP384R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        # O_EXCL makes a concurrent first use fail loudly instead of two processes each
        # writing a different key.
        descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(pem)
    if not public_path.exists():
        public_path.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    return key


def platform_public_key(
    directory: str | os.PathLike[str] | None = None,
) -> ec.EllipticCurvePublicKey:
    """The platform public key, creating the key pair on first use.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as directory:
    ...     public = platform_public_key(directory)
    ...     matches = public == load_or_create_platform_key(directory).public_key()
    >>> matches
    True
    """
    folder = Path(directory) if directory is not None else default_platform_dir()
    public_path = folder / PUBLIC_KEY_FILE
    if not public_path.exists():
        return load_or_create_platform_key(folder).public_key()
    key = serialization.load_pem_public_key(public_path.read_bytes())
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise ValueError(f"{public_path} is not an ECDSA P-384 public key")
    return key
