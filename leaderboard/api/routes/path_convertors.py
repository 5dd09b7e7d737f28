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


class _AdminUserId(_UserId):
    """A user id at the end of an admin path that has longer siblings: not ending in one of
    their suffixes, so that ``GET .../users/x/adjustments`` is not the export of a user
    ``x/adjustments`` (a user whose id ends so is out of reach of export and erase)."""

    regex = r"[\s\S]+(?<!/ban)(?<!/adjustments)"


register_url_convertor("userid", _UserId())
register_url_convertor("adminuserid", _AdminUserId())
