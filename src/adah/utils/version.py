"""adah's version: one place, read by the package face (``adah.__version__``), pyproject.toml
(setuptools' dynamic version) and whatever records which adah wrote a file."""

VERSION = "0.1.0"
