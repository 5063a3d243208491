"""A throwaway SoftHSM2 token for the PKCS11 key store tests, or a clear reason to skip.

One token per test process: SoftHSM reads SOFTHSM2_CONF when the module is first initialised, and
python-pkcs11 keeps the module loaded, so every test shares this token and uses its own object
labels. It must never touch a real token or the system's softhsm2.conf.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import quote

MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)


@dataclass(frozen=True)
class SoftHsmToken:
    """An initialised token: its module, label and PINs."""

    module: str
    label: str
    pin: str
    so_pin: str
    directory: Path

    def uri(self, object_label: str, *, pin: str | None = None, extra: str = "") -> str:
        """A pkcs11: key path for `object_label`, with module-path and pin-value."""
        chosen = self.pin if pin is None else pin
        return (
            f"pkcs11:token={quote(self.label)};object={quote(object_label)}"
            f"?module-path={quote(self.module)}&pin-value={quote(chosen)}{extra}"
        )


def find_module() -> str | None:
    """The SoftHSM2 PKCS#11 module path, from the usual places or `dpkg -L libsofthsm2`."""
    for candidate in MODULE_CANDIDATES:
        if os.path.isfile(candidate):
            return candidate
    dpkg = shutil.which("dpkg")
    if dpkg is None:
        return None
    for package in ("libsofthsm2", "softhsm2"):
        listing = subprocess.run([dpkg, "-L", package], capture_output=True, text=True)
        for line in listing.stdout.splitlines():
            if line.endswith("/libsofthsm2.so") and os.path.isfile(line):
                return line
    return None


def skip_reason() -> str | None:
    """Why the SoftHSM tests cannot run here, or None when they can."""
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        return "python-pkcs11 is not installed: pip install 'enclavesql[pkcs11]'"
    if shutil.which("softhsm2-util") is None or find_module() is None:
        return (
            "SoftHSM2 is not installed (no softhsm2-util or libsofthsm2.so): "
            "apt-get install softhsm2, or run `make system-deps` as root"
        )
    return None


@cache
def shared_token() -> SoftHsmToken:
    """Create (once per process) a token in a temporary directory and point SOFTHSM2_CONF at it.

    Call `skip_reason()` first; this raises if SoftHSM2 is missing.
    """
    module = find_module()
    if module is None:
        raise RuntimeError("SoftHSM2 is not installed")
    directory = Path(tempfile.mkdtemp(prefix="enclavesql-softhsm-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    (directory / "tokens").mkdir()
    config = directory / "softhsm2.conf"
    config.write_text(
        f"directories.tokendir = {directory / 'tokens'}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n",
        encoding="utf-8",
    )
    os.environ["SOFTHSM2_CONF"] = str(config)
    token = SoftHsmToken(
        module=module,
        label="enclavesql-test",
        pin="4321-user",
        so_pin="8765-so",
        directory=directory,
    )
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            token.label,
            "--pin",
            token.pin,
            "--so-pin",
            token.so_pin,
        ],
        check=True,
        capture_output=True,
        env=dict(os.environ),
    )
    return token


def fresh_label(prefix: str = "cmk") -> str:
    """A unique object label, so tests sharing the token never collide."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
