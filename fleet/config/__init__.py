"""fleet.toml: the key table (schema), its validation into Config (loader, model), a cheap peek, and the editor JSON Schema."""
