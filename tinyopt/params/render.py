"""params.yaml rendered from the schema: every key with its default, commented with its Field's description
(a section with its class docstring), so each default and its documentation live once, in tinyopt/params/.

Regenerate the repository's file after changing the schema: python -m tinyopt.params.render > params.yaml"""

from __future__ import annotations

import textwrap
import types
import typing

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from tinyopt.params import Params

WIDTH = 110  # comment lines end by here
COMMENT_COLUMN = 30  # where a key's comment starts, when the key and its value leave room
INDENT = "  "
MIN_COMMENT_WIDTH = 30
REGENERATE = "python -m tinyopt.params.render > params.yaml"


def default_params_yaml() -> str:
    """The repository's params.yaml: a block comment above each top-level key, a comment beside nested ones."""
    defaults = Params()
    lines = _block_comment(Params.__doc__) + [
        "# Rendered from the schema's defaults and descriptions (tinyopt/params/); regenerate with:",
        f"#   {REGENERATE}",
    ]
    for name, field in Params.model_fields.items():
        lines.append("")
        lines += _block_comment(_comment(field))
        lines += _key(name, getattr(defaults, name), depth=0, comment=None)
    return "\n".join(lines) + "\n"


def _key(name: str, value: object, depth: int, comment: str | None) -> list[str]:
    """The lines of one key: a section's keys nested under it, a mapping's or chain list's entries one a line."""
    indent = INDENT * depth
    if isinstance(value, BaseModel):
        fields = type(value).model_fields
        if not fields:
            return _commented(f"{indent}{name}: {{}}", comment)
        lines = _commented(f"{indent}{name}:", comment)
        for key, field in fields.items():
            lines += _key(key, getattr(value, key), depth + 1, _comment(field))
        return lines
    entries = _entries(value)
    if entries is None:
        return _commented(f"{indent}{name}: {_flow(value)}", comment)
    return _commented(f"{indent}{name}:", comment) + [f"{indent}{INDENT}{entry}" for entry in entries]


def _entries(value: object) -> list[str] | None:
    """A mapping's entries or a list of lists' items, one a line; None for a value that fits on its key's line."""
    if isinstance(value, dict):
        # An entry shows the keys its default names (a device profile's runtime estimates keep their defaults).
        return [
            f"{key}: {_flow(item.model_dump(mode='json', exclude_unset=True) if isinstance(item, BaseModel) else item)}"
            for key, item in value.items()
        ]
    if isinstance(value, list) and value and all(isinstance(item, list | tuple) for item in value):
        return [f"- {_flow(item)}" for item in value]
    return None


def _flow(value: object) -> str:
    """One value in YAML's flow style; a whole float as an integer (a float field reads 64 back as 64.0)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_flow(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_flow(item)}" for key, item in value.items()) + "}"
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).removesuffix("\n...\n").strip()


def _comment(field: FieldInfo) -> str | None:
    """A key's documentation: its choices (a Literal's values), then its description or its section's docstring;
    a mapping of sections (device profiles, objectives, channels) adds the keys each entry may set."""
    text = field.description
    if text is None and _is_section(field.annotation):
        text = field.annotation.__doc__
    entry = typing.get_args(field.annotation)[-1] if typing.get_origin(field.annotation) is dict else None
    if _is_section(entry):
        keys = [_entry_key(key, sub) for key, sub in entry.model_fields.items() if _comment(sub)]
        text = " ".join(_sentence(part) for part in (text, *keys) if part)
    return "; ".join(part for part in (*_choices(field.annotation), text) if part) or None


def _entry_key(name: str, field: FieldInfo) -> str:
    default = "" if field.is_required() or field.default in (None, "") else f" (default {_flow(field.default)})"
    return f"{name}: {_comment(field)}{default}"


def _choices(annotation: object) -> list[str]:
    """'a | b | c' for a Literal field, optional or not."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    members = typing.get_args(annotation) if union else (annotation,)
    return [" | ".join(map(str, typing.get_args(m))) for m in members if typing.get_origin(m) is typing.Literal]


def _is_section(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _sentence(text: str) -> str:
    return text if text.endswith(".") else f"{text}."


def _block_comment(text: str | None) -> list[str]:
    return [f"# {line}" for line in _wrap(text, WIDTH - 2)] if text else []


def _commented(line: str, comment: str | None) -> list[str]:
    """`line` with `comment` beside it, wrapped in lines that start at the same column."""
    if not comment:
        return [line]
    column = max(COMMENT_COLUMN, len(line) + 2)
    if WIDTH - column - 2 < MIN_COMMENT_WIDTH:  # a long value (a URL): the comment goes above its key
        indent = line[: len(line) - len(line.lstrip())]
        return [f"{indent}# {part}" for part in _wrap(comment, WIDTH - len(indent) - 2)] + [line]
    wrapped = _wrap(comment, WIDTH - column - 2)
    return [f"{line.ljust(column)}# {wrapped[0]}"] + [f"{' ' * column}# {rest}" for rest in wrapped[1:]]


def _wrap(text: str, width: int) -> list[str]:
    # Whole words only: a hyphenated name (graph-int8-floatio, corstone-300) stays on one line.
    return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False, break_long_words=False)


if __name__ == "__main__":
    print(default_params_yaml(), end="")
