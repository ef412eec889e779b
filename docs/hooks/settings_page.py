"""MkDocs hook: the settings reference, generated from the settings classes so it cannot drift.

`docs/settings.md` holds the marker line `<!-- settings -->`; this hook replaces it with one
table per class in `SETTINGS_CLASSES`: environment variable, type, default, description. A
field whose annotation is itself a settings class (a composed part, such as the gateway's
registry settings) is left out: it has a table of its own. A class that inherits from another
listed class shows only the fields it adds. A class that cannot be imported fails the build.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
import types
import typing
from datetime import date
from enum import Enum
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import Files
from mkdocs.structure.pages import Page
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

# "module:Class", in the order the page shows them.
SETTINGS_CLASSES = [
    "registry.config:RegistrySettings",
    "hosting.config:TritonSettings",
    "hosting.config:EngineSettings",
    "gateway.config:GatewaySettings",
    "trainer.config:TrainerSettings",
]
PAGE = "settings.md"
MARKER = "<!-- settings -->"


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    """Make the repository's packages importable, whether or not they are installed."""
    root = str(Path(config.config_file_path).resolve().parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    return config


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Replace the marker on the settings page with the generated tables."""
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise PluginError(f"{PAGE} has lost its marker line {MARKER}")
    classes = [load(spec) for spec in SETTINGS_CLASSES]
    tables = "\n\n".join(
        render_class(cls, spec, classes)
        for cls, spec in zip(classes, SETTINGS_CLASSES, strict=True)
    )
    return markdown.replace(MARKER, tables)


def load(spec: str) -> type[BaseSettings]:
    """Import `module:Class` and check that it is a settings class."""
    module_name, _, class_name = spec.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise PluginError(f"settings page: cannot import {spec}: {exc}") from exc
    if not (inspect.isclass(cls) and issubclass(cls, BaseSettings)):
        raise PluginError(f"settings page: {spec} is not a pydantic-settings BaseSettings class")
    return cls


def render_class(cls: type[BaseSettings], spec: str, documented: list[type[BaseSettings]]) -> str:
    """One section: the class's docstring line, what it inherits, and its table."""
    bases = [base for base in cls.__mro__[1:] if base in documented]
    inherited = {name for base in bases for name in base.model_fields}
    prefix = str(cls.model_config.get("env_prefix", ""))
    rows = [
        "| environment variable | type | default | description |",
        "| --- | --- | --- | --- |",
    ]
    for name, field in cls.model_fields.items():
        if name in inherited or is_composed(field.annotation):
            continue
        rows.append(
            f"| `{env_name(prefix, name, field)}` | {cell(type_name(field.annotation))} "
            f"| {cell(default_text(field))} | {cell(text(field.description or ''))} |"
        )
    own_doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")  # not BaseSettings' docstring
    doc = own_doc.split("\n\n", 1)[0].replace("\n", " ")
    lines = [f"## {cls.__name__}", "", f"`{spec}`: {text(doc)}" if doc else f"`{spec}`"]
    if bases:
        names = ", ".join(f"[`{base.__name__}`](#{base.__name__.lower()})" for base in bases)
        lines += ["", f"It also reads every setting of {names}."]
    return "\n".join([*lines, "", *rows])


def is_composed(annotation: Any) -> bool:
    """Whether a field holds another settings class (also inside `X | None`)."""
    candidates = typing.get_args(annotation) if is_union(annotation) else (annotation,)
    return any(inspect.isclass(c) and issubclass(c, BaseSettings) for c in candidates)


def is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def env_name(prefix: str, name: str, field: FieldInfo) -> str:
    """The variable pydantic-settings reads: an alias as it is, else the prefix and the name."""
    alias = field.validation_alias or field.alias
    if isinstance(alias, str):
        return alias.upper()
    return f"{prefix}{name}".upper()


def type_name(annotation: Any) -> str:
    """A reader's name for a field's type: `Path or unset`, `auto, cpu or cuda`, `list[str]`."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        values = [f"`{value}`" for value in args]
        return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " or " + values[-1]
    if is_union(annotation):
        named = [type_name(arg) for arg in args if arg is not type(None)]
        optional = " (optional)" if type(None) in args else ""
        return " or ".join(named) + optional
    if origin is not None:
        inner = ", ".join(type_name(arg).strip("`") for arg in args)
        return f"`{getattr(origin, '__name__', str(origin))}[{inner}]`"
    if inspect.isclass(annotation):
        return f"`{annotation.__name__}`"
    return f"`{annotation}`"


def default_text(field: FieldInfo) -> str:
    """The default as it would be written in the environment; empty when there is none."""
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, (Path, date)):
        value = str(value)
    if isinstance(value, (list, dict)):
        value = json.dumps(value)
    if value == "":
        return "empty"
    return f"`{value}`"


def text(value: str) -> str:
    """Markdown that shows `value` as written: outside code spans, `<var_dir>` is no HTML tag."""
    parts = value.split("`")
    for i in range(0, len(parts), 2):  # even parts lie outside code spans
        parts[i] = parts[i].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


def cell(value: str) -> str:
    """A table cell: a pipe would end it, a newline would end the row."""
    return value.replace("|", "\\|").replace("\n", " ")
