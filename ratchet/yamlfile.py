"""YAML files that remember where each key is, so errors can give the file and line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

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
