"""Tokenward: sessions, rotating refresh tokens and revocation that reaches access tokens."""

__version__ = "0.1.0"
__all__ = ["__version__"]
