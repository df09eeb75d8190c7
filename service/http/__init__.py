"""The HTTP layer: thin handlers that parse, call a domain function and shape the answer."""
