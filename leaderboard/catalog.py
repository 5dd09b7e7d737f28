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
                },
            },
        }
    },
}


class CatalogError(Exception):
    pass


@dataclass(frozen=True)
class Action:
    id: str
    title: str
    points: int
    description: str = ""
    data_schema: dict[str, Any] | None = None
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
        }


@dataclass(frozen=True)
class Catalog:
    actions: dict[str, Action]

    def get(self, action_id: str) -> Action | None:
        return self.actions.get(action_id)

    @property
    def max_total_points(self) -> int:
        """A user's highest possible score: each action counts once per user."""
        return sum(a.points for a in self.actions.values())


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
        raise CatalogError(f"{source}: {where}: {error.message}")
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
        actions[entry["id"]] = Action(
            id=entry["id"],
            title=entry["title"],
            points=entry["points"],
            description=entry.get("description", ""),
            data_schema=schema,
            _validator=validator,
        )
    return Catalog(actions)


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
            INSERT INTO actions AS a (id, title, description, points, data_schema, active)
            VALUES ($1, $2, $3, $4, $5::jsonb, true)
            ON CONFLICT (id) DO UPDATE SET
                title = EXCLUDED.title, description = EXCLUDED.description,
                points = EXCLUDED.points, data_schema = EXCLUDED.data_schema,
                active = true, updated_at = now()
            WHERE (a.title, a.description, a.points, a.data_schema, a.active)
                IS DISTINCT FROM
                  (EXCLUDED.title, EXCLUDED.description, EXCLUDED.points,
                   EXCLUDED.data_schema, true)
            """,
            [
                (
                    a.id,
                    a.title,
                    a.description,
                    a.points,
                    None if a.data_schema is None else json.dumps(a.data_schema),
                )
                for a in ordered
            ],
        )
        await conn.execute(
            "UPDATE actions SET active = false, updated_at = now() "
            "WHERE active AND NOT (id = ANY($1::text[]))",
            [a.id for a in ordered],
        )
