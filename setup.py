# cffi_modules is a setup() keyword only: the native code is compiled here at install time.
from setuptools import setup

setup(cffi_modules=["uffdwp/csrc/build.py:ffibuilder"])
