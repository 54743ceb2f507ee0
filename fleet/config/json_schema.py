"""JSON Schema (draft-07) for fleet.toml, for editors such as Taplo: built from the key table in
fleet/config/schema.py and the sections providers declare. `python -m fleet.config.schema --write`
regenerates the shipped fleet/fleet.schema.json.

The schema is named by a stable URL, its `$id`, which `fleet init` writes on the first line of every
fleet.toml (`#:schema …`): the same line on every machine, where a file path would be one laptop's
site-packages. `fleet config schema` prints or writes the schema of the installed fleet (README,
"Editors")."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SCHEMA_ID = "https://fleet.dev/schema/fleet.schema.json"

from .schema import ARRAYS, MAPS, TABLES, TOP_LEVEL, Key, provider_sections


def _prop(key: Key) -> dict[str, Any]:
    prop = dict(key.kind.schema)
    prop["description"] = key.help
    if key.default is not None:
        prop["default"] = key.default
    return prop


def _array_schema(help_text: str, keys: dict[str, Key], required: tuple[str, ...]) -> dict[str, Any]:
    return {"type": "array", "description": help_text,
            "items": {"type": "object", "additionalProperties": False, "required": list(required),
                      "properties": {k: _prop(v) for k, v in keys.items()}}}


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft-07, what TOML editors such as Taplo read) for fleet.toml."""
    props: dict[str, Any] = {name: _prop(key) for name, key in TOP_LEVEL.items()}
    for name, (help_text, keys) in TABLES.items():
        props[name] = {"type": "object", "description": help_text, "additionalProperties": False,
                       "properties": {k: _prop(v) for k, v in keys.items()}}
    for name, (help_text, key_pattern, value) in MAPS.items():
        props[name] = {"type": "object", "description": help_text, "additionalProperties": dict(value.kind.schema)}
        if key_pattern:
            props[name]["propertyNames"] = {"pattern": key_pattern}
    for name, (help_text, keys, required) in ARRAYS.items():
        props[name] = _array_schema(help_text, keys, required)
    from ..providers import registry
    # sorted: an installed fleet lists its entry points in another order than the source checkout,
    # and the schema should be the same document wherever it is generated
    props["provider"]["enum"] = sorted(registry.names(listed_only=True))
    for name, settings in provider_sections(listed_only=True).items():   # not the fake's
        if settings.array:
            props[name] = _array_schema(settings.help, settings.keys, settings.required)
        else:
            props[name] = {"type": "object", "description": settings.help, "additionalProperties": False,
                           "properties": {k: _prop(v) for k, v in settings.keys.items()}}
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": SCHEMA_ID,
        "title": "fleet.toml",
        "description": "An experiment for `fleet up`. Generated from fleet/config/schema.py; do not edit by hand.",
        "type": "object",
        "additionalProperties": False,
        "properties": props,
    }


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def write_schema(path: Path) -> Path:
    """Write the schema to `path` whole (a temporary file renamed over it), for an editor to read;
    a device or FIFO (`-o /dev/stdout`) is written into (fleet.render.output_file)."""
    from ..render.output_file import write_output
    return write_output(path, schema_text())
