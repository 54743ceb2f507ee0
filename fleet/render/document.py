"""A document: a title and a sequence of blocks (headings, paragraphs, fields, bullets, tables).
The run's audit, the CI job summary and the cost report's Markdown are documents."""
from __future__ import annotations


class Heading:
    __slots__ = ("text", "level")

    def __init__(self, text: str, level: int = 2) -> None:
        self.text, self.level = text, level


class Paragraph:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class Fields:
    """Label → value lines: a two-column table (`as_table`) or a bullet list with bold labels."""

    __slots__ = ("pairs", "as_table")

    def __init__(self, pairs: list[tuple[str, str]], *, as_table: bool = False) -> None:
        self.pairs, self.as_table = list(pairs), as_table


class Bullets:
    __slots__ = ("items",)

    def __init__(self, items) -> None:
        self.items: list[str] = list(items)


class Document:
    __slots__ = ("title", "blocks", "level")

    def __init__(self, title: str, blocks=(), *, level: int = 1) -> None:
        self.title, self.blocks, self.level = title, list(blocks), level
