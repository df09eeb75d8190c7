"""Capture log lines as the service would print them (the real formatters), for assertions."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from service.logs import JsonFormatter


class Lines(logging.Handler):
    """Formatted lines in memory."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def json(self) -> list[dict[str, Any]]:
        """Every line parsed (each must be one JSON object)."""
        return [orjson.loads(line) for line in self.lines]


@contextmanager
def captured(formatter: logging.Formatter | None = None) -> Iterator[Lines]:
    """Every line logged under ``tokenward`` at DEBUG and up, formatted as in production."""
    handler = Lines(formatter or JsonFormatter())
    logger = logging.getLogger("tokenward")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
