"""The threshold policy: how thresholds are chosen, who applies them, when to automate.

    >>> policy = load_policy("contracts/thresholds.yaml")
    >>> policy.mode, policy.objective, policy.graduation.cycles

Every error is a SpecError of the form ``contracts/thresholds.yaml:12: min_support.rows: ...``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ratchet.yamlfile import YamlDoc, load_yaml, parse_yaml

MODES = ("suggest", "auto")
#: keep_fpr: keep the merchant's false-positive rate at or below production's, maximise recall.
#: match_block_rate: block (at most) the share of the merchant's payments production blocks.
OBJECTIVES = ("keep_fpr", "match_block_rate")
DEFAULT_PATH = "contracts/thresholds.yaml"
#: Suggestions aim each contract-judged slice's block rate within this share of the clause's
#: allowance (policy key `contract_target`), so the contract's interval test has room to pass.
DEFAULT_CONTRACT_TARGET = 0.5


@dataclass(frozen=True)
class MinSupport:
    """A merchant gets its own threshold only with this much evidence in the test window."""

    rows: int = 2000
    negatives: int = 1000
    positives: int = 0


@dataclass(frozen=True)
class Graduation:
    """The rule that says people have stopped changing suggestions: the last `cycles`
    reviewed cycles each had at least `min_accepted_share` of suggestions accepted
    unchanged and no edit larger than `max_edit` (absolute, in threshold units)."""

    cycles: int = 4
    min_accepted_share: float = 0.9
    max_edit: float = 0.02

    def describe(self) -> str:
        return (f"{self.cycles} consecutive reviewed cycles with at least {self.min_accepted_share:.0%} of "
                f"suggestions accepted unchanged and no edit larger than {self.max_edit:g}")


@dataclass(frozen=True)
class ThresholdPolicy:
    """contracts/thresholds.yaml, validated."""

    mode: str = "suggest"
    objective: str = "keep_fpr"
    merchant_column: str = "merchant_id"
    min_support: MinSupport = field(default_factory=MinSupport)
    graduation: Graduation = field(default_factory=Graduation)
    path: str = "<default>"
    contract_target: float = DEFAULT_CONTRACT_TARGET

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_TOP = ("version", "name", "description", "mode", "objective", "merchant_column", "min_support", "graduation",
        "contract_target")


def _known(doc: YamlDoc, prefix: tuple[str, ...], raw: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for key in raw:
        if key not in allowed:
            raise doc.error(prefix + (key,), f"unknown key '{key}'; check the spelling (known: {', '.join(allowed)})")


def _mapping(doc: YamlDoc, key: str) -> dict[str, Any]:
    raw = doc.data.get(key, {})
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise doc.error((key,), f"expected a mapping, got {type(raw).__name__}")
    return raw


def _int(doc: YamlDoc, kp: tuple[str, ...], value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise doc.error(kp, f"expected a whole number >= 0, got {value!r}")
    return value


def _unit(doc: YamlDoc, kp: tuple[str, ...], value: Any, hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise doc.error(kp, f"expected a number in [0, 1], got {value!r}{hint}")
    return float(value)


def parse_policy(doc: YamlDoc) -> ThresholdPolicy:
    """Validate a parsed YAML document into a ThresholdPolicy (SpecError with file:line)."""
    d = doc.data
    _known(doc, (), d, _TOP)
    mode = d.get("mode", "suggest")
    if mode not in MODES:
        raise doc.error(("mode",), f"expected one of {', '.join(MODES)}, got {mode!r}")
    objective = d.get("objective", "keep_fpr")
    if objective not in OBJECTIVES:
        raise doc.error(("objective",), f"expected one of {', '.join(OBJECTIVES)}, got {objective!r}")
    column = d.get("merchant_column", "merchant_id")
    if not isinstance(column, str) or not column:
        raise doc.error(("merchant_column",), f"expected a column name, got {column!r}")
    ms = _mapping(doc, "min_support")
    _known(doc, ("min_support",), ms, ("rows", "negatives", "positives"))
    defaults = MinSupport()
    support = MinSupport(**{k: _int(doc, ("min_support", k), ms.get(k, getattr(defaults, k)))
                            for k in ("rows", "negatives", "positives")})
    gr = _mapping(doc, "graduation")
    _known(doc, ("graduation",), gr, ("cycles", "min_accepted_share", "max_edit"))
    g0 = Graduation()
    cycles = _int(doc, ("graduation", "cycles"), gr.get("cycles", g0.cycles))
    if cycles < 1:
        raise doc.error(("graduation", "cycles"), "needs at least 1 cycle")
    share = _unit(doc, ("graduation", "min_accepted_share"), gr.get("min_accepted_share", g0.min_accepted_share),
                  "; write 0.9 for 90%")
    max_edit = _unit(doc, ("graduation", "max_edit"), gr.get("max_edit", g0.max_edit), " (threshold units)")
    target = _unit(doc, ("contract_target",), d.get("contract_target", DEFAULT_CONTRACT_TARGET),
                   "; the share of a contract clause's allowance to aim within, e.g. 0.5")
    if target <= 0:
        raise doc.error(("contract_target",), "must be above 0 (0 leaves no room at all); e.g. 0.5")
    return ThresholdPolicy(mode=mode, objective=objective, merchant_column=column, min_support=support,
                           graduation=Graduation(cycles, share, max_edit), path=doc.path, contract_target=target)


def load_policy(path: str | Path = DEFAULT_PATH) -> ThresholdPolicy:
    """Load and validate a threshold policy file."""
    return parse_policy(load_yaml(path))


def policy_from_text(text: str, path: str = "<string>") -> ThresholdPolicy:
    """Same as load_policy, from YAML text."""
    return parse_policy(parse_yaml(text, path))


def policy_from_dict(d: dict[str, Any]) -> ThresholdPolicy:
    """Rebuild a policy from its to_dict() form (as stored with suggestions)."""
    return ThresholdPolicy(mode=d["mode"], objective=d["objective"], merchant_column=d["merchant_column"],
                           min_support=MinSupport(**d["min_support"]), graduation=Graduation(**d["graduation"]),
                           path=d.get("path", "<stored>"),
                           contract_target=float(d.get("contract_target", DEFAULT_CONTRACT_TARGET)))


def release_policy(text: str = "", path: str = "thresholds.yaml") -> ThresholdPolicy | None:
    """The policy a release uses: `text` when given, else the project's contracts/thresholds.yaml,
    else None (no file: per-merchant suggestions are off and the release behaves as before)."""
    if text.strip():
        return policy_from_text(text, path)
    from ratchet.files import project_file

    found = project_file(DEFAULT_PATH)
    return load_policy(found) if Path(found).exists() else None
