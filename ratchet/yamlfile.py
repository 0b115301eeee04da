"""YAML files that remember where each key is, so errors can give the file and line.

Every YAML file users edit (training spec, rollout plan, thresholds policy, monitor
config, contract) is declared as pydantic models built on `FileModel` and checked by the
one function `validate`, which turns the first pydantic error into a SpecError
``file:line: key.path: message``. A file kind words its messages with a `Messages`
function (None: the default wording); rules that are not types are small validators on
the models that call `fail(message, *subpath)`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from ratchet.errors import SpecError

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class YamlDoc:
    """A parsed YAML mapping plus the line of every key path (1-based)."""

    path: str
    data: dict[str, Any]
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line(self, keypath: KeyPath) -> int | None:
        """Line of keypath, or of its nearest ancestor that has one."""
        kp = tuple(keypath)
        while kp:
            if kp in self.lines:
                return self.lines[kp]
            kp = kp[:-1]
        return None

    def error(self, keypath: KeyPath, message: str) -> SpecError:
        """A SpecError that names the file, the line and the key."""
        return SpecError(where(self.path, self.line(keypath), keypath) + message)


def where(path: str, line: int | None, keypath: KeyPath) -> str:
    """'file:line: key.path: ' prefix for error messages."""
    key = ".".join(f"[{k}]" if isinstance(k, int) else str(k) for k in keypath).replace(".[", "[")
    loc = f"{path}:{line}" if line else path
    return f"{loc}: {key + ': ' if key else ''}"


def _walk(node: yaml.Node, prefix: KeyPath, out: dict[KeyPath, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            kp = prefix + (key_node.value,)
            out[kp] = key_node.start_mark.line + 1
            _walk(value_node, kp, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            kp = prefix + (i,)
            out[kp] = item.start_mark.line + 1
            _walk(item, kp, out)


def parse_yaml(text: str, path: str = "<string>") -> YamlDoc:
    """Parse YAML text that must hold a mapping; errors name the file and line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"{where(path, line, ())}not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a YAML mapping at the top level, got {type(data).__name__}")
    lines: dict[KeyPath, int] = {}
    if node is not None:
        _walk(node, (), lines)
    return YamlDoc(path=path, data=data, lines=lines)


def load_yaml(path: str | Path) -> YamlDoc:
    """Read and parse a YAML file; a missing or unreadable file is a SpecError naming it."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{p}: file not found; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{p}: cannot read the file ({exc})") from None
    return parse_yaml(text, str(p))


# ---- declared models ---------------------------------------------------------------------
T = TypeVar("T")


class FileModel(BaseModel):
    """A mapping in a YAML file: unknown keys are errors, YAML types are taken as they are
    (no '10' for 10), and with `none_is_default` a key written as null takes its default."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    none_is_default: ClassVar[bool] = False

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        allowed = tuple(f.alias or name for name, f in cls.model_fields.items())
        for key in data:
            if key not in allowed:
                raise PydanticCustomError("unknown_key", "unknown key", {"key": key, "allowed": allowed})
        if cls.none_is_default:
            return {k: v for k, v in data.items() if v is not None}
        return data


def fail(message: str, *subpath: str | int) -> PydanticCustomError:
    """The error a model validator raises: `message` at the model's key path + subpath."""
    return PydanticCustomError("ratchet", "{message}", {"message": message, "path": subpath})


@dataclass(frozen=True)
class Problem:
    """One validation error, as a file kind's Messages function sees it."""

    kind: str  # pydantic's error type, or unknown_key
    keypath: KeyPath
    value: Any
    ctx: dict[str, Any]

    @property
    def choices(self) -> list[str]:
        """The allowed values of a literal_error, in declaration order."""
        return re.findall(r"'([^']*)'", str(self.ctx.get("expected", "")))


#: A file kind's wording: a message, or (message, key path) to report it elsewhere, or None.
Messages = Callable[[Problem], "str | tuple[str, KeyPath] | None"]

_TYPE_WORDS = {"int_type": "an integer", "int_from_float": "an integer", "float_type": "a number",
               "string_type": "a string", "bool_type": "true or false", "list_type": "a list"}


def default_message(p: Problem) -> str:
    """The wording every file kind shares unless its Messages function says otherwise."""
    if p.kind == "ratchet":
        return str(p.ctx["message"])
    if p.kind == "unknown_key":
        return f"unknown key; allowed: {', '.join(sorted(p.ctx['allowed']))}"
    if p.kind == "missing":
        return "is required"
    if p.kind in ("dict_type", "model_type", "model_attributes_type", "dataclass_type"):
        return f"expected a mapping, got {type(p.value).__name__}"
    if p.kind == "literal_error":
        return f"expected one of {', '.join(p.choices)}, got {p.value!r}"
    if p.kind in _TYPE_WORDS:
        return f"expected {_TYPE_WORDS[p.kind]}, got {p.value!r}"
    bounds = {"greater_than": (">", "gt"), "greater_than_equal": (">=", "ge"), "less_than": ("<", "lt"),
              "less_than_equal": ("<=", "le")}
    if p.kind in bounds:
        op, key = bounds[p.kind]
        return f"must be {op} {p.ctx[key]}, got {p.value!r}"
    if p.kind == "too_short":
        return f"expected at least {p.ctx.get('min_length', 1)} item(s), got {p.value!r}"
    return f"{p.value!r}: {p.ctx.get('message') or p.kind}"


_FIELD = re.compile(r"^[a-z_][a-z0-9_]*$")  # a model's field; union tags are class names or have brackets


def _keypath(data: Any, loc: tuple[Any, ...], missing: bool = False) -> KeyPath:
    """pydantic's loc as a key path of the document (union and validator tags dropped; the
    last part of a missing key's loc is the key)."""
    out: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        if i == len(loc) - 1 and (missing or (isinstance(node, dict) and _FIELD.match(str(part)))):
            out.append(part)  # a key the document leaves out (missing, or its default is checked)
            break
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            continue
        out.append(part)
    return tuple(out)


def problems(doc: YamlDoc, exc: ValidationError) -> list[Problem]:
    """Every error of a failed validation, in pydantic's order, as Problems."""
    out = []
    for err in exc.errors(include_url=False):
        kp = _keypath(doc.data, tuple(err["loc"]), err["type"] == "missing")
        ctx = dict(err.get("ctx") or {})
        kind = err["type"]
        if kind == "unknown_key":
            kp = kp + (ctx["key"],)
        elif kind == "ratchet":
            kp = kp + tuple(ctx.get("path") or ())
        out.append(Problem(kind=kind, keypath=kp, value=err.get("input"), ctx=ctx))
    return out


def validate(doc: YamlDoc, model: type[T], messages: Messages | None = None, *, by_line: bool = False,
             count_more: bool = False) -> T:
    """doc.data validated as `model`; the first error is a SpecError ``file:line: key: message``.

    by_line reports the error that comes first in the file (else pydantic's first, which
    follows the models' field order); count_more adds '(and N more problem(s))'.
    """
    try:
        return TypeAdapter(model).validate_python(doc.data)
    except ValidationError as exc:
        found = problems(doc, exc)
        if by_line:
            found.sort(key=lambda p: doc.line(p.keypath) or 0)
        first = found[0]
        said = (messages(first) if messages else None) or default_message(first)
        msg, keypath = said if isinstance(said, tuple) else (said, first.keypath)
        others = len({p.keypath for p in found} - {first.keypath})  # a union's branches count once
        more = f" (and {others} more problem(s))" if count_more and others else ""
        raise doc.error(keypath, msg + more) from None
