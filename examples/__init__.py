"""Runnable examples of using Tokenward from a resource server."""
