"""What GPUs a run asks for: `8`, `A100:8`, `A100-80GB:8`, `L4` (pure: no I/O).

`--gpus` and `gpus = …` in fleet.toml take a count, a GPU type, or both (`TYPE:COUNT`). A type is a
model name (A100, H100, L4, A10G, …) and optionally its memory (`A100-80GB`). Providers describe
their machines' GPUs as free text (AWS: `A100`; nvidia-smi on a host: `NVIDIA A100-SXM4-80GB`;
Slurm GRES: `a100`); `GpuType.matches` compares a request with such a text by whole name tokens,
case-insensitively, so `A10` does not match `A100` and `A100` matches `NVIDIA A100-SXM4-40GB`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(r"[a-z0-9]+")
_MEMORY = re.compile(r"^(\d{1,4})\s*(?:g|gb|gib)$", re.IGNORECASE)
_MODEL = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[ _][A-Za-z0-9]+)*\Z")
# Words in vendor names that say nothing about the model.
_NOISE = frozenset({"nvidia", "tesla", "geforce", "gpu", "pcie", "sxm", "sxm2", "sxm4", "sxm5", "hbm3", "hbm3e",
                    "nvl", "gres"})


def gpus_text(count: int | None) -> str:
    """`1 GPU`, `8 GPUs`: what messages and titles say (issue 17: "1 GPUs")."""
    return f"{count} GPU" if count == 1 else f"{count} GPUs"


class GpuRequestError(ValueError):
    """A `--gpus` value that is neither a count nor TYPE[:COUNT]; the message is one line for the user."""


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


@dataclass(frozen=True)
class GpuType:
    """A GPU model, optionally with its memory in GB (`A100-80GB`)."""

    model: str
    memory_gb: int | None = None

    def __str__(self) -> str:
        return self.model + (f"-{self.memory_gb}GB" if self.memory_gb else "")

    @property
    def slurm_name(self) -> str:
        """The GRES type Slurm clusters conventionally use (`gpu:a100:2`)."""
        return self.model.lower().replace(" ", "_")

    def matches(self, description: str, memory_mib: int | None = None) -> bool:
        """True when `description` (a provider's name for a GPU) is this model, and, when a memory
        size was asked for, the GPU has it (from `memory_mib`, else a `80GB` token in the name)."""
        words = _tokens(description)
        wanted = _tokens(self.model)
        if not wanted or not _contains(words, wanted):
            return False
        if self.memory_gb is None:
            return True
        if memory_mib:
            return round(memory_mib / 1024) == self.memory_gb
        return f"{self.memory_gb}gb" in words or f"{self.memory_gb}g" in words


def _contains(words: list[str], wanted: list[str]) -> bool:
    n = len(wanted)
    return any(words[i:i + n] == wanted for i in range(len(words) - n + 1))


@dataclass(frozen=True)
class GpuRequest:
    """`--gpus`: how many (None: one machine's worth) and of which type (None: any)."""

    count: int | None = None
    type: GpuType | None = None

    def __str__(self) -> str:
        if self.type is None:
            return "" if self.count is None else str(self.count)
        return str(self.type) + ("" if self.count is None else f":{self.count}")


def parse_gpu_type(text: str) -> GpuType:
    text = text.strip()
    model, memory = text, None
    head, sep, tail = text.rpartition("-")
    if sep and _MEMORY.match(tail.strip()):
        model, memory = head.strip(), int(_MEMORY.match(tail.strip()).group(1))   # type: ignore[union-attr]
    # Every GPU model name has a digit (A100, L4, A10G, MI300X, RTX 6000): `gpus = "many"` is a typo,
    # not a model to look for.
    if not _MODEL.match(model) or set(_tokens(model)) <= _NOISE or not any(c.isdigit() for c in model):
        raise GpuRequestError(f"{text!r} is not a GPU count or type; write a count like 8, or a model like "
                              "A100, H100, L4 or A100-80GB")
    if memory is not None and memory < 1:
        raise GpuRequestError(f"{text!r}: GPU memory must be at least 1GB")
    return GpuType(model.upper() if model.isalnum() else model, memory)


# ASCII digits: str.isdigit() also takes "²" and "①", which int() then refused (`--gpus ²` was
# `internal error: ValueError`).
_INTEGER = re.compile(r"-?[0-9]+")


def parse_gpu_request(value: object, *, max_count: int) -> GpuRequest:
    """8 · "8" · "A100:8" · "A100-80GB:8" · "L4" → GpuRequest; anything else raises GpuRequestError."""
    if isinstance(value, int) and not isinstance(value, bool):
        return GpuRequest(_count(value, max_count))
    if not isinstance(value, str) or not value.strip():
        shown = str(value).lower() if isinstance(value, bool) else repr(value)
        raise GpuRequestError(f"must be a positive integer or TYPE:COUNT like A100:8, got {shown}")
    text = value.strip()
    if _INTEGER.fullmatch(text):
        return GpuRequest(_count(_whole(text, max_count), max_count))
    kind, sep, count = text.rpartition(":")
    if not sep:
        return GpuRequest(None, parse_gpu_type(text))
    if not _INTEGER.fullmatch(count.strip()):
        raise GpuRequestError(f"{text!r}: the count after ':' must be a whole number, as in A100:8")
    return GpuRequest(_count(_whole(count.strip(), max_count), max_count), parse_gpu_type(kind))


def _whole(text: str, max_count: int) -> int:
    """int(text) of an _INTEGER: int() refuses more than 4300 digits (`--gpus 999…9` was `internal error:
    ValueError`); a count that long is past any max_count whatever its value."""
    digits = text.lstrip("-").lstrip("0")
    if len(digits) > len(str(max_count)) + 1:
        if text.startswith("-"):
            raise GpuRequestError(f"must be a positive integer, got a {len(digits)}-digit negative number")
        raise GpuRequestError(f"must be at most {max_count} GPUs per lease, got a {len(digits)}-digit number")
    return int(("-" if text.startswith("-") else "") + (digits or "0"))   # 4,400 leading zeros: int() refused


def _count(value: int, max_count: int) -> int:
    if value < 1:
        raise GpuRequestError(f"must be a positive integer, got {value}")
    if value > max_count:
        raise GpuRequestError(f"must be at most {max_count} GPUs per lease, got {value}")
    return value
