"""The threshold policy: how thresholds are chosen, who applies them, when to automate.

    >>> policy = load_policy("contracts/thresholds.yaml")
    >>> policy.mode, policy.objective, policy.graduation.cycles

The file is declared as pydantic models (PolicyFile) checked by ratchet.yamlfile.validate.
Every error is a SpecError of the form ``contracts/thresholds.yaml:12: min_support.rows: ...``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, PlainValidator, WithJsonSchema, field_validator

from ratchet.yamlfile import FileModel, Problem, YamlDoc, fail, load_yaml, parse_yaml, validate

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


# ---- the file ------------------------------------------------------------------------
def _whole(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise fail(f"expected a whole number >= 0, got {value!r}")
    return value


Whole = Annotated[int, PlainValidator(_whole), WithJsonSchema({"type": "integer", "minimum": 0})]


def _unit(hint: str) -> Any:
    """A number in [0, 1]; `hint` ends the error message."""

    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise fail(f"expected a number in [0, 1], got {value!r}{hint}")
        return float(value)

    return Annotated[float, PlainValidator(check), WithJsonSchema({"type": "number", "minimum": 0, "maximum": 1})]


def _mapping_or_null(v: Any) -> Any:
    return {} if v is None else v


class MinSupportFile(FileModel):
    rows: Whole = 2000
    negatives: Whole = 1000
    positives: Whole = 0


class GraduationFile(FileModel):
    cycles: Whole = 4
    min_accepted_share: _unit("; write 0.9 for 90%") = 0.9
    max_edit: _unit(" (threshold units)") = 0.02

    @field_validator("cycles")
    @classmethod
    def _one_cycle(cls, v: int) -> int:
        if v < 1:
            raise fail("needs at least 1 cycle")
        return v


class PolicyFile(FileModel):
    """A threshold policy file (contracts/thresholds.yaml)."""

    model_config = ConfigDict(title="ratchet threshold policy")
    version: Any = Field(default=1, json_schema_extra={"const": 1})
    name: Any = Field(default=None, json_schema_extra={"type": "string"})
    description: Any = Field(default=None, json_schema_extra={"type": "string"})
    mode: Literal[MODES] = "suggest"
    objective: Literal[OBJECTIVES] = "keep_fpr"
    merchant_column: str = "merchant_id"
    min_support: MinSupportFile = MinSupportFile()
    graduation: GraduationFile = GraduationFile()
    contract_target: _unit("; the share of a contract clause's allowance to aim within, e.g. 0.5") = \
        DEFAULT_CONTRACT_TARGET

    _sections = field_validator("min_support", "graduation", mode="before")(_mapping_or_null)

    @field_validator("merchant_column", mode="before")
    @classmethod
    def _column(cls, v: Any) -> Any:
        if not isinstance(v, str) or not v:
            raise fail(f"expected a column name, got {v!r}")
        return v

    @field_validator("contract_target")
    @classmethod
    def _room(cls, v: float) -> float:
        if v <= 0:
            raise fail("must be above 0 (0 leaves no room at all); e.g. 0.5")
        return v


def _messages(p: Problem) -> str | None:
    if p.kind == "unknown_key":
        key, allowed = p.ctx["key"], p.ctx["allowed"]
        return f"unknown key '{key}'; check the spelling (known: {', '.join(allowed)})"
    return None


def parse_policy(doc: YamlDoc) -> ThresholdPolicy:
    """Validate a parsed YAML document into a ThresholdPolicy (SpecError with file:line)."""
    f = validate(doc, PolicyFile, _messages)
    g = f.graduation
    return ThresholdPolicy(mode=f.mode, objective=f.objective, merchant_column=f.merchant_column,
                           min_support=MinSupport(**f.min_support.model_dump()),
                           graduation=Graduation(g.cycles, g.min_accepted_share, g.max_edit), path=doc.path,
                           contract_target=f.contract_target)


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
