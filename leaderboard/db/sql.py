"""Quoting for the few statements that cannot take parameters (CREATE ROLE, ALTER SYSTEM...)."""

from __future__ import annotations


def ident(name: str) -> str:
    """An SQL identifier, double-quoted."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    """An SQL string literal, single-quoted."""
    return "'" + value.replace("'", "''") + "'"
