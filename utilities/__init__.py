"""Shared library of the Chia plot & drive manager: every role script is a thin shell over this."""

__version__ = "1.0.0"
