"""The exploration policy file (contracts/exploration.yaml): what `ratchet serve
--exploration FILE` and the synthetic world's censoring read.

    exploration:
      share: 0.05                      # allow 5% of would-be-blocked payments (at the threshold)
      min_share: 0.01                  # optional: 1% at score 1.0, linear in between
      max_expected_loss_per_day: 500   # optional: sum of score x amount explored per UTC day
      opt_out:
        merchant_id: [m00017]
        merchant_category: [gambling]
      seed: 7

Every error names the file, the line and the key (ratchet.yamlfile.validate).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, PlainValidator, WithJsonSchema, model_validator

from ratchet.exploration.policy import MAX_SHARE, ExplorationPolicy
from ratchet.yamlfile import FileModel, Problem, YamlDoc, fail, load_yaml, parse_yaml, validate


def _share(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise fail(f"expected a number, got {v!r}")
    if not 0 < v <= MAX_SHARE:
        raise fail(f"expected a share in (0, {MAX_SHARE}] (0.05 = 5% of would-be-blocked payments), got {v!r}")
    return float(v)


def _positive(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
        raise fail(f"expected a number > 0, got {v!r}")
    return float(v)


def _names(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise fail(f"expected a list of names, got {v!r}")
    return tuple(v)


Share = Annotated[float, PlainValidator(_share),
                  WithJsonSchema({"type": "number", "exclusiveMinimum": 0, "maximum": MAX_SHARE})]
Positive = Annotated[float, PlainValidator(_positive), WithJsonSchema({"type": "number", "exclusiveMinimum": 0})]
Names = Annotated[Any, PlainValidator(_names),
                  WithJsonSchema({"type": "array", "items": {"type": "string", "minLength": 1}})]


class OptOutFile(FileModel):
    none_is_default = True
    merchant_id: Names = ()
    merchant_category: Names = ()


class ExplorationSection(FileModel):
    none_is_default = True
    share: Share
    min_share: Share | None = None
    max_expected_loss_per_day: Positive | None = None
    opt_out: OptOutFile = OptOutFile()
    seed: int = 0

    @model_validator(mode="after")
    def _order(self) -> "ExplorationSection":
        if self.min_share is not None and self.min_share > self.share:
            raise fail(f"min_share ({self.min_share}) is the share at score 1.0 and may not exceed "
                       f"share ({self.share}), the share at the threshold", "min_share")
        return self


class ExplorationFile(FileModel):
    """An exploration policy file."""

    model_config = ConfigDict(title="ratchet exploration policy")
    version: Literal[1] = 1
    exploration: ExplorationSection


def _messages(p: Problem) -> str | None:
    if p.kind == "literal_error" and p.keypath == ("version",):
        return f"unsupported version {p.value!r}; this ratchet reads version 1"
    if p.kind == "missing" and p.keypath == ("exploration",):
        return "missing section 'exploration' (with at least share: 0.05)"
    return None


def policy_from_doc(doc: YamlDoc) -> ExplorationPolicy:
    f = validate(doc, ExplorationFile, _messages).exploration
    return ExplorationPolicy(share=f.share, min_share=f.min_share, max_expected_loss_per_day=f.max_expected_loss_per_day,
                             opt_out_merchants=frozenset(f.opt_out.merchant_id),
                             opt_out_categories=frozenset(f.opt_out.merchant_category), seed=f.seed)


def load_exploration_policy(path: str | Path) -> ExplorationPolicy:
    """Load and validate an exploration policy file (SpecError naming file, line and key)."""
    return policy_from_doc(load_yaml(path))


def exploration_policy_from_text(text: str, path: str = "<string>") -> ExplorationPolicy:
    return policy_from_doc(parse_yaml(text, path))
