"""JSON Schema (draft-07) for fleet.toml, for editors such as Taplo: built from the key table in
fleet/config/schema.py and the sections providers declare. `python -m fleet.config.schema --write`
regenerates the shipped fleet/fleet.schema.json."""
from __future__ import annotations

import json
from typing import Any

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
    props["provider"]["enum"] = registry.names(listed_only=True)
    for name, settings in provider_sections(listed_only=True).items():   # not the fake's
        if settings.array:
            props[name] = _array_schema(settings.help, settings.keys, settings.required)
        else:
            props[name] = {"type": "object", "description": settings.help, "additionalProperties": False,
                           "properties": {k: _prop(v) for k, v in settings.keys.items()}}
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "fleet.toml",
        "description": "An experiment for `fleet up`. Generated from fleet/config/schema.py; do not edit by hand.",
        "type": "object",
        "additionalProperties": False,
        "properties": props,
    }


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, ensure_ascii=False, sort_keys=False) + "\n"
