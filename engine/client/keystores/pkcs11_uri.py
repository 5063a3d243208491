"""RFC 7512 `pkcs11:` URIs as PKCS11 key paths: parsing, PIN lookup and redaction.

It only parses and reads the PIN source; it must not load a PKCS#11 module. Every message built
from a URI uses `redact_pkcs11_uri`, so a pin-value never reaches an error or a log.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, unquote_to_bytes, urlsplit

from engine.errors import OperationalError

__all__ = ["Pkcs11Uri", "parse_pkcs11_uri", "redact_pkcs11_uri", "MODULE_ENV", "PIN_ENV"]

MODULE_ENV = "ENCLAVESQL_PKCS11_MODULE"
PIN_ENV = "ENCLAVESQL_PKCS11_PIN"

# Path attributes we use, and the standard ones we accept but do not need (RFC 7512 2.3).
_PATH_USED = {"token", "object", "id", "type"}
_PATH_IGNORED = {
    "manufacturer",
    "model",
    "serial",
    "library-manufacturer",
    "library-description",
    "library-version",
    "slot-manufacturer",
    "slot-description",
    "slot-id",
}
_QUERY_USED = {"module-path", "pin-value", "pin-source"}
_QUERY_IGNORED = {"module-name"}
_PIN_VALUE = re.compile(r"(?i)(pin-value=)[^&;#]*")


def redact_pkcs11_uri(uri: str) -> str:
    """The URI with any pin-value replaced by `***`; safe on malformed input too.

    >>> redact_pkcs11_uri("pkcs11:token=t;object=k?module-path=/m.so&pin-value=1234")
    'pkcs11:token=t;object=k?module-path=/m.so&pin-value=***'
    """
    return _PIN_VALUE.sub(r"\1***", uri)


@dataclass(frozen=True)
class Pkcs11Uri:
    """The attributes of a `pkcs11:` key path that the PKCS11 provider uses."""

    token: str
    object: str
    id: bytes | None = None
    type: str | None = None
    module_path: str | None = None
    pin_source: str | None = None
    pin_value: str | None = field(default=None, repr=False)
    text: str = field(default="", repr=False)

    @property
    def redacted(self) -> str:
        """The original text with the PIN hidden, for messages."""
        return redact_pkcs11_uri(self.text)

    def without_pin_value(self) -> str:
        """The original text with the pin-value attribute removed (a KEY_PATH safe to store).

        >>> key = parse_pkcs11_uri("pkcs11:token=t;object=k?pin-value=1&module-path=/m.so")
        >>> key.without_pin_value()
        'pkcs11:token=t;object=k?module-path=/m.so'
        """
        path, _, query = self.text.partition("?")
        kept = [part for part in query.split("&") if part and not _is_pin_value(part)]
        return path + ("?" + "&".join(kept) if kept else "")

    def module(self) -> str:
        """The PKCS#11 module to load: module-path, else $ENCLAVESQL_PKCS11_MODULE."""
        module = self.module_path or os.environ.get(MODULE_ENV)
        if not module:
            raise OperationalError(
                f"PKCS11 key path '{self.redacted}' names no module: add "
                f"'?module-path=/path/to/module.so' or set {MODULE_ENV}"
            )
        return module

    def pin(self) -> str | None:
        """The user PIN: pin-value, else the contents of pin-source, else $ENCLAVESQL_PKCS11_PIN."""
        if self.pin_value is not None:
            return self.pin_value
        if self.pin_source is not None:
            source = self.pin_source
            if source.startswith("file:"):
                source = unquote(urlsplit(source).path)
            try:
                return Path(source).read_text(encoding="utf-8").rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as error:
                reason = getattr(error, "strerror", None) or type(error).__name__
                raise OperationalError(
                    f"PKCS11 key path '{self.redacted}': the pin-source file cannot be read "
                    f"({reason}); check the path"
                ) from None
        return os.environ.get(PIN_ENV)


def _is_pin_value(part: str) -> bool:
    return part.split("=", 1)[0].lower() == "pin-value"


def _malformed(uri: str, problem: str) -> OperationalError:
    return OperationalError(
        f"PKCS11 key path '{redact_pkcs11_uri(uri)}' is not a valid RFC 7512 pkcs11: URI: "
        f"{problem}. Expected 'pkcs11:token=LABEL;object=LABEL?module-path=/path/module.so"
        "&pin-source=file:/path/pin'"
    )


def _attributes(uri: str, text: str, separator: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for part in text.split(separator):
        if not part:
            continue
        name, equals, value = part.partition("=")
        name = name.lower()
        if not equals or not name:
            raise _malformed(uri, f"attribute '{name or part}' has no '=value'")
        if name in values:
            raise _malformed(uri, f"attribute '{name}' appears twice")
        values[name] = value
    return values


def _text(uri: str, name: str, value: str) -> str:
    try:
        return unquote_to_bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed(uri, f"attribute '{name}' is not UTF-8 after percent-decoding") from None


def parse_pkcs11_uri(uri: str) -> Pkcs11Uri:
    """Parse a PKCS11 key path; token and object are required, values are percent-decoded.

    >>> key = parse_pkcs11_uri("pkcs11:token=My%20HSM;object=cmk1;id=%01%02?pin-source=/p")
    >>> (key.token, key.object, key.id, key.pin_source)
    ('My HSM', 'cmk1', b'\\x01\\x02', '/p')
    >>> parse_pkcs11_uri("pkcs11:object=cmk1")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    engine.errors.OperationalError: PKCS11 key path 'pkcs11:object=cmk1' is not a valid ...
    """
    if not isinstance(uri, str) or not uri[:7].lower() == "pkcs11:":
        raise _malformed(str(uri), "it must start with 'pkcs11:'")
    if "#" in uri:
        raise _malformed(uri, "a fragment ('#') is not allowed")
    path_text, _, query_text = uri[7:].partition("?")
    path = _attributes(uri, path_text, ";")
    query = _attributes(uri, query_text, "&")
    for name in path:
        if name not in _PATH_USED | _PATH_IGNORED and not name.startswith("x-"):
            raise _malformed(uri, f"unknown path attribute '{name}'")
    for name in query:
        if name not in _QUERY_USED | _QUERY_IGNORED and not name.startswith("x-"):
            raise _malformed(uri, f"unknown query attribute '{name}'")
    for required in ("token", "object"):
        if not path.get(required):
            raise _malformed(uri, f"the '{required}' attribute is required")
    if "pin-value" in query and "pin-source" in query:
        raise _malformed(uri, "give either pin-value or pin-source, not both")
    key_type = _text(uri, "type", path["type"]).lower() if "type" in path else None
    if key_type not in (None, "private"):
        raise _malformed(uri, "type must be 'private' (the CMK's private key object)")
    decoded = {name: _text(uri, name, value) for name, value in query.items()}
    return Pkcs11Uri(
        token=_text(uri, "token", path["token"]),
        object=_text(uri, "object", path["object"]),
        id=unquote_to_bytes(path["id"]) if "id" in path else None,
        type=key_type,
        module_path=decoded.get("module-path") or None,
        pin_source=decoded.get("pin-source") or None,
        pin_value=decoded.get("pin-value"),
        text=uri,
    )
