"""evalcompare: run LLM evaluations and compare their runs side by side.

The version has one source, the package metadata (pyproject.toml's `version`).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("evalcompare")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"
