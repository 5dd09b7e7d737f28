"""The action catalog: loaded from YAML, validated, upserted into PostgreSQL at start-up.

Each action carries the JSON Schema of its ``data``; the schema is checked when the catalog is
loaded (a broken catalog stops the API at start-up, not at the first completion).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg
import jsonschema
import yaml
from jsonschema.exceptions import best_match

from leaderboard.boards import ALL_TIME, NEVER, Board, ScheduleError

ID_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
CATALOG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["actions"],
    "additionalProperties": False,
    "properties": {
        "actions": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "title", "points"],
                "additionalProperties": False,
                "properties": {
                    "id": {"type": "string", "pattern": ID_PATTERN},
                    "title": {"type": "string", "minLength": 1, "maxLength": 200},
                    "description": {"type": "string", "maxLength": 2000},
                    "points": {"type": "integer", "minimum": 1, "maximum": 100000},
                    "data": {"type": "object"},
                    "repeat": {
                        "oneOf": [
                            {"enum": ["once", "hourly", "daily", "weekly"]},
                            {"type": "integer", "minimum": 1, "maximum": 31536000},
                            {
                                "type": "object",
                                "required": ["season"],
                                "additionalProperties": False,
                                "properties": {"season": {"type": "string", "pattern": ID_PATTERN}},
                            },
                        ]
                    },
                },
            },
        },
        "boards": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "title"],
                "additionalProperties": False,
                "properties": {
                    "id": {"type": "string", "pattern": ID_PATTERN, "not": {"const": ALL_TIME}},
                    "title": {"type": "string", "minLength": 1, "maxLength": 200},
                    "actions": {
                        "oneOf": [
                            {"const": "all"},
                            {
                                "type": "array",
                                "minItems": 1,
                                "uniqueItems": True,
                                "items": {"type": "string", "pattern": ID_PATTERN},
                            },
                        ]
                    },
                    "reset": {"type": "string", "minLength": 1, "maxLength": 200},
                    "timezone": {"type": "string", "minLength": 1, "maxLength": 64},
                },
            },
        },
    },
}


class CatalogError(Exception):
    pass


# How often an action may count, in seconds (0: once ever). An integer in the catalog is a
# number of seconds (short events, tests).
REPEATS = {"once": 0, "hourly": 3600, "daily": 86400, "weekly": 604800}


@dataclass(frozen=True)
class Action:
    id: str
    title: str
    points: int
    description: str = ""
    data_schema: dict[str, Any] | None = None
    repeat_s: int = 0  # counts once per this many seconds (0: once ever)
    repeat_board: str | None = None  # counts once per season of this board
    _validator: jsonschema.protocols.Validator | None = field(
        default=None, compare=False, repr=False
    )

    def check_data(self, data: dict[str, Any]) -> str | None:
        """None if ``data`` is acceptable, else one sentence saying what is wrong."""
        if self._validator is None:
            return None if not data else f"action {self.id!r} takes no data"
        error = best_match(self._validator.iter_errors(data))
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path)
        return f"{where}: {error.message}" if where else error.message

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "points": self.points,
            "data": self.data_schema,
            "repeat": self.repeat,
        }

    @property
    def repeat(self) -> str | int | dict[str, str]:
        """As the catalog says it: once, hourly, daily, weekly, a number of seconds, or
        ``{"season": board}``."""
        if self.repeat_board is not None:
            return {"season": self.repeat_board}
        return next((name for name, s in REPEATS.items() if s == self.repeat_s), self.repeat_s)

    @property
    def period_name(self) -> str:
        """For messages: "" (once ever), "this hour", "today", "this week", "in this 10 s
        period", "in this season of 'weekly'"."""
        if self.repeat_board is not None:
            return f"in this season of {self.repeat_board!r}"
        names = {0: "", 3600: "this hour", 86400: "today", 604800: "this week"}
        return names.get(self.repeat_s, f"in this {self.repeat_s} s period")


ALL_TIME_BOARD = Board(ALL_TIME, "All time")


@dataclass(frozen=True)
class Catalog:
    actions: dict[str, Action]
    # Every board, the implicit all-time one first.
    boards: dict[str, Board] = field(default_factory=lambda: {ALL_TIME: ALL_TIME_BOARD})

    def get(self, action_id: str) -> Action | None:
        return self.actions.get(action_id)

    @property
    def seasonal(self) -> list[Board]:
        """The declared boards (every board but the all-time one), in catalog order."""
        return [b for b in self.boards.values() if b.id != ALL_TIME]

    @property
    def max_total_points(self) -> int:
        """A user's highest score from the actions that count once (repeatable ones have no
        ceiling: a score past the ranking's exact range is refused by the ranking, logged)."""
        return sum(
            a.points for a in self.actions.values() if a.repeat_s == 0 and a.repeat_board is None
        )


def default_catalog_text() -> str:
    return (resources.files("leaderboard") / "catalog.yaml").read_text()


def parse_catalog(text: str, source: str = "catalog") -> Catalog:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError(f"{source}: not valid YAML: {exc}") from None
    error = best_match(jsonschema.Draft202012Validator(CATALOG_SCHEMA).iter_errors(raw))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path)
        line = _line_of(text, list(error.absolute_path))
        raise CatalogError(f"{source}{f':{line}' if line else ''}: {where}: {error.message}")

    def fail(path: list[str | int], message: str) -> CatalogError:
        line = _line_of(text, path)
        return CatalogError(f"{source}{f':{line}' if line else ''}: {message}")

    actions: dict[str, Action] = {}
    for entry in raw["actions"]:
        if entry["id"] in actions:
            raise CatalogError(f"{source}: action {entry['id']!r} is defined twice")
        schema = entry.get("data")
        validator = None
        if schema is not None:
            try:
                jsonschema.Draft202012Validator.check_schema(schema)
            except jsonschema.SchemaError as exc:
                raise CatalogError(
                    f"{source}: action {entry['id']!r}: bad data schema: {exc.message}"
                ) from None
            validator = jsonschema.Draft202012Validator(schema)
        repeat = entry.get("repeat", "once")
        actions[entry["id"]] = Action(
            id=entry["id"],
            title=entry["title"],
            points=entry["points"],
            description=entry.get("description", ""),
            data_schema=schema,
            repeat_s=0 if isinstance(repeat, dict) else _repeat_s(repeat),
            repeat_board=repeat["season"] if isinstance(repeat, dict) else None,
            _validator=validator,
        )
    boards = {ALL_TIME: ALL_TIME_BOARD}
    for i, entry in enumerate(raw.get("boards", [])):
        if entry["id"] in boards:
            raise fail(["boards", i, "id"], f"board {entry['id']!r} is defined twice")
        listed = entry.get("actions", "all")
        if listed != "all":
            for j, action_id in enumerate(listed):
                if action_id not in actions:
                    at: list[str | int] = ["boards", i, "actions", j]
                    raise fail(at, f"board {entry['id']!r}: no action {action_id!r}")
        try:
            boards[entry["id"]] = Board(
                id=entry["id"],
                title=entry["title"],
                action_ids=None if listed == "all" else frozenset(listed),
                reset=entry.get("reset", NEVER),
                timezone=entry.get("timezone", "UTC"),
            )
        except ScheduleError as exc:
            key = "timezone" if "time zone" in str(exc) else "reset"
            raise fail(["boards", i, key], f"board {entry['id']!r}: {exc}") from None
    for i, (action_id, action) in enumerate(actions.items()):
        if action.repeat_board is not None and action.repeat_board not in boards:
            raise fail(
                ["actions", i, "repeat", "season"],
                f"action {action_id!r} repeats per season of {action.repeat_board!r}, "
                "which is not a board",
            )
    return Catalog(actions, boards)


def _line_of(text: str, path: list[str | int]) -> int | None:
    """The 1-based line of the YAML node at ``path`` (as deep as the path leads)."""
    node: yaml.Node | None = yaml.compose(text)
    line = None
    for step in path:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == step), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int):
            node = node.value[step] if step < len(node.value) else None
        else:
            node = None
        if node is None:
            break
        line = node.start_mark.line + 1
    return line


def _repeat_s(value: str | int) -> int:
    return REPEATS[value] if isinstance(value, str) else value


def load_catalog(path: Path | None) -> Catalog:
    if path is None:
        return parse_catalog(default_catalog_text(), "built-in catalog")
    try:
        text = path.read_text()
    except OSError as exc:
        raise CatalogError(f"cannot read catalog {path}: {exc.strerror}") from None
    return parse_catalog(text, str(path))


async def upsert_catalog(conn: asyncpg.Connection, catalog: Catalog) -> None:
    """Make the ``actions`` table match the catalog; actions no longer listed are deactivated
    (not deleted: completions reference them)."""
    ordered = sorted(catalog.actions.values(), key=lambda a: a.id)  # one lock order for all pods
    async with conn.transaction():
        await conn.executemany(
            """
            INSERT INTO actions AS a
                (id, title, description, points, data_schema, repeat_s, repeat_board, active)
            VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, true)
            ON CONFLICT (id) DO UPDATE SET
                title = EXCLUDED.title, description = EXCLUDED.description,
                points = EXCLUDED.points, data_schema = EXCLUDED.data_schema,
                repeat_s = EXCLUDED.repeat_s, repeat_board = EXCLUDED.repeat_board,
                active = true, updated_at = now()
            WHERE (a.title, a.description, a.points, a.data_schema, a.repeat_s,
                   a.repeat_board, a.active)
                IS DISTINCT FROM
                  (EXCLUDED.title, EXCLUDED.description, EXCLUDED.points,
                   EXCLUDED.data_schema, EXCLUDED.repeat_s, EXCLUDED.repeat_board, true)
            """,
            [
                (
                    a.id,
                    a.title,
                    a.description,
                    a.points,
                    None if a.data_schema is None else json.dumps(a.data_schema),
                    a.repeat_s,
                    a.repeat_board,
                )
                for a in ordered
            ],
        )
        await conn.execute(
            "UPDATE actions SET active = false, updated_at = now() "
            "WHERE active AND NOT (id = ANY($1::text[]))",
            [a.id for a in ordered],
        )
