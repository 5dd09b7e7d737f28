"""The ``userid`` path convertor, registered on import (before any route that uses it)."""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor


class _UserId(Convertor[str]):
    """A user id is whatever `sub` a token carries: `/` (`a/b`) and any other character
    included. Starlette's `path` convertor is `.*`, which lets a trailing newline through as
    an empty id; this one takes every character."""

    regex = r"[\s\S]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("userid", _UserId())
