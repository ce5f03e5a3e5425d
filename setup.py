# pyproject.toml holds all metadata; this file only adds the cffi extension
# (native/ring.c -> wsd_ring._ring), which pyproject.toml cannot express.
from setuptools import setup

setup(cffi_modules=["native/ring_build.py:ffibuilder"])
