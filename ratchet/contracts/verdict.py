"""The verdict: every clause on every slice, pass / fail / inconclusive / not judged, and its renderings.

    >>> verdict.passed                 # no blocking clause failed credibly
    >>> verdict.failures()             # failed blocking results, worst first
    >>> verdict.open_questions()       # blocking results neither shown to pass nor to fail
    >>> print(verdict.to_text())       # terminal; also to_markdown(), to_html(), to_dict()
"""

from __future__ import annotations

import base64

import html
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ratchet.evaluate.metrics import CARD_PRECISION_PREFIX

STATUSES = ("fail", "inconclusive", "pass", "not_judged")
#: How the verdict was reached, in words (JSON "method"; README explains it for reviewers).
METHOD = {
    "pass": "the interval at the clause's confidence lies within the allowance",
    "fail": "the interval lies entirely beyond the allowance, after Holm's step-down correction over the clause's judged slices",
    "inconclusive": "the interval straddles the allowance (an open question for the shadow phase)",
    "not_judged": "support below the clause's min_support (an open question for the shadow phase)",
    "multiplicity": "Holm (1979) per clause, family-wise error 1 - confidence over its judged slices",
}


@dataclass(frozen=True)
class ClauseResult:
    """One clause on one slice ('all' for the whole population)."""

    name: str
    kind: str
    metric: str
    severity: str
    status: str                      # pass | fail | inconclusive | not_judged
    slice: str
    family: str
    baseline: float | None
    candidate: float | None
    difference: float | None         # candidate - baseline
    interval: tuple[float, float] | None  # on the difference (bound: on the candidate's value)
    support: int
    min_support: int
    confidence: float
    rule: str
    reason: str
    excess: float | None             # point estimate beyond the limit (> 0: violated)
    source: str                      # contract file:line
    p_pass: float | None = None      # smallest two-sided alpha at which the interval lies within the allowance
    p_fail: float | None = None      # ... entirely beyond it (before Holm)
    k: int | None = None             # card_precision_at_k: cards checked per day
    estimator: str = "plain"         # "ipw": judged on inverse-propensity-weighted estimates

    @property
    def blocking_failure(self) -> bool:
        return self.status == "fail" and self.severity == "block"

    @property
    def open_question(self) -> bool:
        """A blocking result neither shown to pass nor to fail (comparisons without a baseline excepted)."""
        return (self.severity == "block" and self.status in ("inconclusive", "not_judged")
                and self.reason != "no baseline")

    @property
    def key(self) -> str:
        """'clause[slice]': how an open question is named in the rollout and in waivers."""
        return f"{self.name}[{self.slice}]"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "metric": self.metric, "severity": self.severity,
            "status": self.status, "slice": self.slice, "baseline": self.baseline,
            "candidate": self.candidate, "difference": self.difference,
            "interval": list(self.interval) if self.interval else None, "support": self.support,
            "min_support": self.min_support, "rule": self.rule, "reason": self.reason,
            "source": self.source, "p_pass": self.p_pass, "p_fail": self.p_fail,
        } | ({"k": self.k} if self.k is not None else {}) | (
            {"estimator": self.estimator} if self.estimator != "plain" else {})

    def sentence(self) -> str:
        """One line a person reads: 'category_approval_rate failed for merchant_category=podcasts: ...'."""
        nums = f"candidate {_num(self.candidate)}"
        if self.baseline is not None:
            nums = f"baseline {_num(self.baseline)} -> {nums} (diff {_num(self.difference, signed=True)}"
            nums += f", {self.confidence:.0%} CI {_interval(self.interval)})" if self.interval else ")"
        elif self.interval:
            nums += f" ({self.confidence:.0%} CI {_interval(self.interval)})"
        why = f" ({self.reason})" if self.reason else ""
        return (f"{self.name} {self.status.replace('_', ' ')} for {self.slice}: {nums}; rule: {self.rule}; "
                f"support {self.support}{why} [{self.source}]")


def _num(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.4g}" if signed else f"{x:.4g}"


def _interval(iv: tuple[float, float] | None) -> str:
    return "n/a" if iv is None else f"[{iv[0]:+.4g}, {iv[1]:+.4g}]"


def _worst_first(results: list[ClauseResult]) -> list[ClauseResult]:
    rank = {"fail": 0, "inconclusive": 1, "not_judged": 2, "pass": 3}
    return sorted(results, key=lambda r: (rank[r.status], r.severity != "block", -(r.excess or 0.0)))


@dataclass
class Verdict:
    """The outcome of judging scored data against a contract."""

    contract: str
    contract_name: str
    results: list[ClauseResult]
    overall: dict[str, Any]
    thresholds: dict[str, str]
    has_baseline: bool
    table: pd.DataFrame | None = field(default=None, repr=False)
    #: the numeric thresholds judged: per model a scalar or a per-row array (not serialised)
    threshold_values: dict[str, Any] = field(default_factory=dict, repr=False)
    #: confidence sequences (live reviews) instead of fixed-sample intervals
    sequential: bool = False
    #: set for a release that has no shadow phase to resolve open questions in (a bootstrap:
    #: no production model to shadow): an open question then blocks like a failure
    open_questions_block: bool = False

    @property
    def passed(self) -> bool:
        """True when no blocking clause failed on any slice (and, when open questions block,
        none is open: every blocking result was shown to pass)."""
        if any(r.blocking_failure for r in self.results):
            return False
        return not (self.open_questions_block and self.open_questions())

    def _open_title(self) -> str:
        return ("open questions: they block this release (a bootstrap has no production model to resolve them "
                "against in shadow)" if self.open_questions_block else "open questions for the shadow phase")

    def open_questions(self) -> list[ClauseResult]:
        """Blocking results that are inconclusive or not judged: what the shadow phase must resolve."""
        return _worst_first([r for r in self.results if r.open_question])

    def failures(self, include_warnings: bool = False) -> list[ClauseResult]:
        """Failed results (blocking only unless include_warnings), worst first."""
        return _worst_first([r for r in self.results if r.status == "fail" and (include_warnings or r.severity == "block")])

    def counts(self) -> dict[str, int]:
        c = Counter(r.status for r in self.results)
        return {s: c.get(s, 0) for s in STATUSES} | {"blocking_failures": len(self.failures())}

    def clause_summary(self) -> list[dict[str, Any]]:
        """Per clause: kind, severity, rule, source and pass/fail/not-judged counts."""
        out: dict[str, dict[str, Any]] = {}
        for r in self.results:
            s = out.setdefault(r.name, {"name": r.name, "kind": r.kind, "metric": r.metric, "severity": r.severity,
                                        "rule": r.rule, "scope": r.family, "source": r.source,
                                        "pass": 0, "fail": 0, "inconclusive": 0, "not_judged": 0})
            s[r.status] += 1
        return list(out.values())

    def worst_slices(self, n: int = 5) -> list[tuple[str, str]]:
        """(family, slice) of the worst failing or violating per-slice results, for reports."""
        seen: list[tuple[str, str]] = []
        for r in _worst_first([r for r in self.results if r.family != "overall" and (r.excess or 0) > 0]):
            key = (r.family, r.slice)
            if key not in seen:
                seen.append(key)
            if len(seen) == n:
                break
        return seen

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed, "contract": self.contract, "counts": self.counts(),
            "open_questions": [r.key for r in self.open_questions()], "open_questions_block": self.open_questions_block,
            "method": {**METHOD, "intervals": "confidence sequences (anytime-valid)" if self.sequential
                       else "fixed-sample intervals"},
            "overall": self.overall, "thresholds": self.thresholds,
            "clauses": [r.to_dict() for r in _worst_first(self.results)],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    # -- text ------------------------------------------------------------------
    def headline(self) -> str:
        c = self.counts()
        word = "PASSED" if self.passed else "FAILED"
        base = "" if self.has_baseline else " (bootstrap: no baseline, comparisons not judged)"
        oq = len(self.open_questions())
        word += f" with {oq} open question(s)" if self.passed and oq else ""
        if not self.passed and self.open_questions_block and not c["blocking_failures"]:
            word += f": {oq} open question(s) block a bootstrap release"
        return (f"{word}: contract {self.contract_name} -- {c['blocking_failures']} blocking failure(s), "
                f"{c['fail']} failed, {c['pass']} passed, {c['inconclusive']} inconclusive, "
                f"{c['not_judged']} not judged{base}")

    def to_text(self, max_lines: int = 20) -> str:
        lines = [self.headline()]
        fails = self.failures(include_warnings=True)
        if fails:
            lines.append("")
            lines.append("failures (worst first):")
            for r in fails[:max_lines]:
                tag = "BLOCK" if r.severity == "block" else "warn "
                lines.append(f"  {tag} {r.sentence()}")
            if len(fails) > max_lines:
                lines.append(f"  ... and {len(fails) - max_lines} more (use --format json or html)")
        oq = self.open_questions()
        if oq:
            lines.append("")
            lines.append(f"{self._open_title()} ({len(oq)}: inconclusive or not judged, blocking):")
            for r in oq[:max_lines]:
                lines.append(f"  {r.sentence()}")
            if len(oq) > max_lines:
                lines.append(f"  ... and {len(oq) - max_lines} more (use --format json or html)")
        lines.append("")
        lines.append("clauses:")
        for s in self.clause_summary():
            lines.append(f"  {s['name']:<32} {s['severity']:<5} {s['scope']:<20} pass {s['pass']:>5}  fail {s['fail']:>4}"
                         f"  inconclusive {s['inconclusive']:>4}  not judged {s['not_judged']:>5}   {s['rule']}  [{s['source']}]")
        lines.append("")
        lines.append(f"method: pass = {METHOD['pass']}; fail = {METHOD['fail']}; "
                     + ("confidence sequences (anytime-valid)" if self.sequential else "fixed-sample intervals"))
        lines.append("")
        lines.append("overall: " + _overall_line(self.overall))
        lines.append("thresholds: " + ", ".join(f"{k} {v}" for k, v in self.thresholds.items()))
        return "\n".join(lines)

    # -- markdown ----------------------------------------------------------------
    def to_markdown(self, max_rows: int = 30) -> str:
        icon = "✅" if self.passed else "❌"
        out = [f"### {icon} {self.headline()}", ""]
        out.append(f"Overall: {_overall_line(self.overall)}  ")
        out.append("Thresholds: " + "; ".join(f"{k} {v}" for k, v in self.thresholds.items()))
        out.append("")
        # the clause table first: short, and the whole story when MLflow cuts a long description
        out += ["#### Clauses", "", "| clause | scope | rule | severity | pass | fail | inconclusive | not judged |",
                "|---|---|---|---|---|---|---|---|"]
        for s in self.clause_summary():
            out.append(f"| `{s['name']}` | {s['scope']} | {s['rule']} | {s['severity']} | {s['pass']} | {s['fail']} | "
                       f"{s['inconclusive']} | {s['not_judged']} |")
        out += ["", f"_Pass: {METHOD['pass']}. Fail: {METHOD['fail']}. Inconclusive: {METHOD['inconclusive']}._", ""]
        fails = self.failures(include_warnings=True)
        out += _md_section("Failures (worst first)", "", fails, max_rows, "failures",
                           ("clause", "severity", "slice", "baseline", "candidate", "diff", "interval", "support", "source"),
                           lambda r: (f"`{r.name}`", r.severity, r.slice, _num(r.baseline), _num(r.candidate),
                                      _num(r.difference, True), _interval(r.interval), r.support, f"`{r.source}`"))
        oq = self.open_questions()
        out += _md_section(f"{self._open_title().capitalize()} ({len(oq)})",
                           "Blocking clause x slice results neither shown to pass nor to fail; " +
                           ("a bootstrap release goes to @production only when every blocking bound is shown to pass."
                            if self.open_questions_block else "the rollout holds in shadow until each resolves as "
                            "pass, or a person waives it (`ratchet approve V --waive ...`)."),
                           oq, max_rows, "open questions",
                           ("question", "status", "baseline", "candidate", "diff", "interval", "support", "note"),
                           lambda r: (f"`{r.key}`", r.status.replace("_", " "), _num(r.baseline), _num(r.candidate),
                                      _num(r.difference, True), _interval(r.interval), r.support, r.reason))
        return "\n".join(out) + "\n"

    # -- html ------------------------------------------------------------------
    def to_html(self, figures: dict[str, bytes] | None = None) -> str:
        """The HTML page; `figures` (title -> PNG bytes) are embedded after the overall table."""
        return render_html(self, figures)


def _md_section(title: str, intro: str, results: list[ClauseResult], max_rows: int, what: str,
                head: tuple[str, ...], cells: Any) -> list[str]:  # noqa: ANN401 - ClauseResult -> cells
    """A Markdown table of results under a heading (nothing when there are none)."""
    if not results:
        return []
    out = [f"#### {title}", ""] + ([intro, ""] if intro else [])
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in cells(r)) + " |" for r in results[:max_rows]]
    if len(results) > max_rows:
        out.append(f"\n_{len(results) - max_rows} more {what}: see the HTML verdict._")
    return out + [""]


def _card_precisions(o: dict[str, Any]) -> list[tuple[str, float]]:
    """(k, value) of the card precisions among a model's overall metrics (key card_precision_at_<k>)."""
    return [(key.rsplit("_", 1)[1], v) for key, v in o.items()
            if key.startswith(CARD_PRECISION_PREFIX) and v is not None]


def _overall_line(overall: dict[str, Any]) -> str:
    parts = []
    for m in ("baseline", "candidate"):
        o = overall.get(m)
        if not o:
            continue
        parts.append(f"{m}: AUC {_num(o['auc'])}, AP {_num(o['average_precision'])}, recall@FPR {_num(o['recall_at_fpr'])}, "
                     f"FPR {_num(o['fpr'])}, recall {_num(o['recall'])}, block rate {_num(o['block_rate'])}"
                     + "".join(f", CP@{k} {_num(v)}" for k, v in _card_precisions(o)))
    rows = next((o["rows"] for m, o in overall.items() if m in ("baseline", "candidate") and o), 0)
    return f"{rows:,} rows; " + "; ".join(parts)


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem auto;max-width:1200px;color:#1f2328;padding:0 1rem}
h1{font-size:1.5rem;margin:.2rem 0} h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem}
.banner{padding:1rem 1.25rem;border-radius:8px;margin-bottom:1rem}
.banner.pass{background:#dafbe1;border:1px solid #2da44e}.banner.fail{background:#ffebe9;border:1px solid #cf222e}
.cards{display:flex;gap:.75rem;flex-wrap:wrap;margin:1rem 0}.card{border:1px solid #d0d7de;border-radius:8px;padding:.6rem 1rem;min-width:8rem}
.card b{display:block;font-size:1.4rem}
table{border-collapse:collapse;width:100%;font-size:.85rem;margin:.5rem 0}
th,td{border-bottom:1px solid #eaeef2;padding:.3rem .5rem;text-align:right;white-space:nowrap}
th{background:#f6f8fa;position:sticky;top:0} td.l,th.l{text-align:left;white-space:normal}
.st{font-weight:600;border-radius:4px;padding:.1rem .4rem}
.st.fail{background:#cf222e;color:#fff}.st.warn{background:#bf8700;color:#fff}.st.pass{background:#dafbe1;color:#116329}
.st.not_judged{background:#eaeef2;color:#57606a}.st.inconclusive{background:#fff8c5;color:#7d4e00}
details{margin:.4rem 0} summary{cursor:pointer;font-weight:600} code{font-size:.85em;color:#57606a}
.muted{color:#57606a;font-size:.85rem}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _status_cell(r: ClauseResult) -> str:
    cls = "warn" if (r.status == "fail" and r.severity == "warn") else r.status
    label = {"fail": "FAIL", "pass": "pass", "inconclusive": "inconclusive", "not_judged": "not judged"}[r.status]
    if cls == "warn":
        label = "WARN"
    return f'<span class="st {cls}">{label}</span>'


def _rows_html(results: list[ClauseResult], with_clause: bool) -> str:
    head = ("<tr>" + ('<th class="l">clause</th>' if with_clause else "") +
            '<th class="l">slice</th><th>status</th><th>baseline</th><th>candidate</th><th>difference</th>'
            '<th>interval</th><th>support</th><th class="l">note</th><th class="l">source</th></tr>')
    body = []
    for r in results:
        body.append("<tr>" + (f'<td class="l"><b>{_e(r.name)}</b></td>' if with_clause else "") +
                    f'<td class="l">{_e(r.slice)}</td><td>{_status_cell(r)}</td><td>{_num(r.baseline)}</td>'
                    f"<td>{_num(r.candidate)}</td><td>{_num(r.difference, True)}</td><td>{_interval(r.interval)}</td>"
                    f'<td>{r.support:,}</td><td class="l">{_e(r.reason)}</td><td class="l"><code>{_e(r.source)}</code></td></tr>')
    return f"<table>{head}{''.join(body)}</table>"


def render_html(v: Verdict, figures: dict[str, bytes] | None = None) -> str:
    """A self-contained page: summary, figures, worst offenders, then one table per clause."""
    c = v.counts()
    cls = "pass" if v.passed else "fail"
    fails = v.failures(include_warnings=True)
    cards = "".join(f'<div class="card">{k}<b>{n:,}</b></div>' for k, n in
                    (("blocking failures", c["blocking_failures"]), ("open questions", len(v.open_questions())),
                     ("failed", c["fail"]), ("inconclusive", c["inconclusive"]), ("passed", c["pass"]),
                     ("not judged", c["not_judged"])))
    overall_rows = []
    models = [(m, v.overall[m]) for m in ("baseline", "candidate") if v.overall.get(m)]
    cp_keys = sorted({key for _, o in models for key in o if key.startswith(CARD_PRECISION_PREFIX)
                      and any(o2.get(key) is not None for _, o2 in models)})
    for m, o in models:
        overall_rows.append(f'<tr><td class="l">{m}</td>' + "".join(
            f"<td>{_num(o.get(k)) if k != 'rows' else f'{o[k]:,}'}</td>" for k in
            ("rows", "auc", "average_precision", "recall_at_fpr", "fpr", "recall", "precision", "block_rate",
             *cp_keys)) +
            f"<td>{_e(v.thresholds.get(m, ''))}</td></tr>")
    overall = ('<table><tr><th class="l">model</th><th>rows</th><th>AUC</th><th>avg precision</th><th>recall@FPR</th>'
               "<th>FPR</th><th>recall</th><th>precision</th><th>block rate</th>"
               + "".join(f"<th>card precision@{key.rsplit('_', 1)[1]}</th>" for key in cp_keys)
               + "<th>threshold</th></tr>" + "".join(overall_rows) + "</table>")
    ref = v.overall.get("reference_fpr") or {}
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Verdict: {_e(v.contract_name)} -- {'passed' if v.passed else 'failed'}</title>",
        f"<style>{_CSS}</style></head><body>",
        f'<div class="banner {cls}"><h1>{"Passed" if v.passed else "Failed"}: contract {_e(v.contract_name)}</h1>',
        f'<div class="muted">{_e(v.headline())}<br>contract <code>{_e(v.contract)}</code></div></div>',
        f'<div class="cards">{cards}</div>',
        "<h2>Overall</h2>", overall,
        f'<p class="muted">recall@FPR read at {_e(ref.get("how", ""))}.</p>',
    ]
    for title, png in (figures or {}).items():
        data = base64.b64encode(png).decode("ascii")
        parts += [f"<h2>{_e(title)}</h2>", f'<img alt="{_e(title)}" style="max-width:100%" src="data:image/png;base64,{data}">']
    if fails:
        parts += ["<h2>Worst offenders</h2>", _rows_html(fails[:50], with_clause=True)]
        if len(fails) > 50:
            parts.append(f'<p class="muted">{len(fails) - 50} more failures in the clause tables below.</p>')
    oq = v.open_questions()
    if oq:
        parts += [f"<h2>{_e(v._open_title().capitalize())} ({len(oq):,})</h2>",
                  '<p class="muted">Blocking results neither shown to pass nor to fail. ' +
                  ("A bootstrap release goes to @production only when every blocking bound is shown to pass.</p>"
                   if v.open_questions_block else "The rollout holds in shadow until each resolves as pass on live "
                   "traffic, or a person waives it.</p>"),
                  _rows_html(oq[:200], with_clause=True)]
    parts.append(f'<p class="muted">pass: {_e(METHOD["pass"])}; fail: {_e(METHOD["fail"])}; inconclusive: '
                 f'{_e(METHOD["inconclusive"])}.</p>')
    parts.append("<h2>Clauses</h2>")
    for s in v.clause_summary():
        rs = _worst_first([r for r in v.results if r.name == s["name"]])
        open_ = " open" if s["fail"] else ""
        parts.append(
            f"<details{open_}><summary>{_e(s['name'])} &mdash; {_e(s['rule'])} &middot; {_e(s['scope'])} &middot; "
            f"{_e(s['severity'])} &middot; fail {s['fail']}, inconclusive {s['inconclusive']}, pass {s['pass']}, "
            f"not judged {s['not_judged']} "
            f"<code>{_e(s['source'])}</code></summary>{_rows_html(rs, with_clause=False)}</details>")
    parts.append("</body></html>")
    return "\n".join(parts)
