"""The client's name for normalization rule v1, kept so existing imports keep working.

The code lives in `engine.normalization`, where the host can use it too (it normalizes a
plaintext column before the enclave encrypts it). This module only re-exports; add nothing here.

>>> normalize([1], "TINYINT").to_pylist()
[b'\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00']
"""

from __future__ import annotations

from engine.normalization import denormalize, normalize

__all__ = ["denormalize", "normalize"]
