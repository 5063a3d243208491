"""Build hook: compiles native/ through cffi (API mode) at install time; holds no metadata."""

from setuptools import setup

setup(cffi_modules=["enclave/build_enclave.py:ffibuilder"])
