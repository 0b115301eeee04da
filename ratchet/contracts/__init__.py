"""Contracts: business expectations as data, judged slice by slice into a verdict.

    >>> from ratchet.contracts import load_contract, evaluate_contract
    >>> verdict = evaluate_contract(load_contract("contracts/fraud.yaml"), scored_df)
    >>> verdict.passed, [r.sentence() for r in verdict.failures()]
"""

from ratchet.contracts.evaluate import ScoresError, check_scores, evaluate_contract
from ratchet.contracts.model import Amount, Clause, Contract, Thresholds, contract_from_text, load_contract
from ratchet.contracts.verdict import ClauseResult, Verdict

__all__ = [
    "Amount", "Clause", "ClauseResult", "Contract", "ScoresError", "Thresholds", "Verdict",
    "check_scores", "contract_from_text", "evaluate_contract", "load_contract",
]
