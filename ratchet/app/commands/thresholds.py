"""`ratchet thresholds review|approve|status`: argument plumbing only; ratchet/cli.py wires it.

Each function takes the parsed arguments (version, set, reject, user, format, config,
tracking_uri, model_name) and returns an exit code; a RatchetError propagates, and the
`ratchet` command prints it and exits 2 with nothing changed.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os

EXIT_OK = 0  # as ratchet.app.cli: errors propagate as RatchetError (exit 2)


def _registry(args: argparse.Namespace):
    from ratchet.registry import Registry

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep the tables readable

    return Registry(getattr(args, "tracking_uri", None), getattr(args, "model_name", "fraud"))


def _user(args: argparse.Namespace) -> str:
    user = getattr(args, "user", None) or os.environ.get("RATCHET_USER")
    if not user:
        try:
            user = getpass.getuser()
        except Exception:  # no login name (containers): say so rather than guess
            user = "unknown"
    return user


def review_cli(args: argparse.Namespace) -> int:
    """`ratchet thresholds review VERSION`: what is suggested, what changes."""
    from ratchet.thresholds.cycle import load_suggestions, review_text

    reg = _registry(args)
    if getattr(args, "format", "text") == "json":
        print(load_suggestions(reg, args.version).to_json())
    else:
        print(review_text(reg, args.version))
    return EXIT_OK


def approve_cli(args: argparse.Namespace) -> int:
    """`ratchet thresholds approve VERSION [--set M=V ...] [--reject M ...] [--user NAME]
    [--force --reason WHY]`."""
    from ratchet.thresholds.cycle import approve_version
    from ratchet.thresholds.ledger import parse_edits

    edits = parse_edits(getattr(args, "set", None))
    entry, _ = approve_version(_registry(args), args.version, edits, getattr(args, "reject", None) or [],
                               actor=_user(args), force=bool(getattr(args, "force", False)),
                               reason=getattr(args, "reason", None))
    print(approval_text(entry))
    return EXIT_OK


def approval_text(entry: dict) -> str:
    s = entry["summary"]
    lines = [f"version {entry['version']}: thresholds approved by {entry['actor']} at {entry['at']} "
             f"(ledger cycle {entry['cycle']}" + (f", supersedes cycle {entry['supersedes']}" if entry.get("supersedes")
                                                 else "") + ")",
             f"  {s['accepted']} accepted unchanged, {s['edited']} edited, {s['rejected']} rejected "
             f"of {s['suggestions']} ({s['accepted_share']:.0%} unchanged, largest edit {s['max_edit']:.4f})"]
    for d in entry["decisions"]:
        if d["decision"] == "edited":
            lines.append(f"  edited   {d['merchant']}: {d['suggested']:.4f} -> {d['approved']:.4f}")
        elif d["decision"] == "rejected":
            lines.append(f"  rejected {d['merchant']}: {d['suggested']:.4f} not applied; uses the global threshold")
    forced = entry.get("forced")
    if forced:
        lines.append(f"  FORCED past the contract ({forced['reason']}):")
        lines += [f"    {c['clause']}, {c['slice']}: block rate {c['baseline']:.2%} -> {c['candidate']:.2%} "
                  f"(allowance {c['allowance'] * 100:.2f} points)" for c in forced["clauses"]]
        if forced.get("unjudged"):
            lines.append("    (not re-judged: the version has no stored scored rows)")
    a = entry["approved"]
    lines.append(f"  in force for version {entry['version']}: global {a['threshold']:.4f}, "
                 f"{len(a['merchant_thresholds'])} merchant thresholds (tags threshold, merchant_thresholds)")
    return "\n".join(lines)


def status_cli(args: argparse.Namespace) -> int:
    """`ratchet thresholds status [--format text|json] [--config contracts/thresholds.yaml]`."""
    from ratchet.files import project_file
    from ratchet.thresholds.cycle import status, status_text
    from ratchet.thresholds.policy import DEFAULT_PATH, load_policy

    policy = load_policy(getattr(args, "config", None) or project_file(DEFAULT_PATH))
    st = status(_registry(args), policy)
    print(json.dumps(st, indent=2, default=str) if getattr(args, "format", "text") == "json" else status_text(st))
    return EXIT_OK


def add_thresholds_command(sub: argparse._SubParsersAction, registry_arguments) -> argparse.ArgumentParser:
    """Add `thresholds review|approve|status` to the `ratchet` parser.

    registry_arguments: ratchet.app.cli._registry_arguments (adds --tracking-uri, --model-name).
    Imports nothing heavy, so `ratchet --help` stays fast.
    """
    t = sub.add_parser("thresholds", help="per-merchant thresholds: review, approve, status",
                       description="Each release suggests a threshold per large merchant (contracts/thresholds.yaml). "
                       "Review them, approve them (with edits or rejections), and see the history of cycles and "
                       "whether people have stopped changing the suggestions.")
    tsub = t.add_subparsers(dest="thresholds_command", metavar="ACTION", required=True)
    r = tsub.add_parser("review", help="what is suggested for a version, and what changes")
    registry_arguments(r)
    r.add_argument("version", type=int)
    r.add_argument("--format", choices=["text", "json"], default="text")
    r.set_defaults(func=review_cli)
    a = tsub.add_parser("approve", help="approve a version's suggestions, with edits and rejections",
                        description="Record the decision on every suggestion of VERSION (accepted unchanged unless "
                        "--set or --reject) in the ledger, then apply the approved thresholds to the version's "
                        "tags (what the decision service uses). A rejected merchant uses the global threshold.")
    registry_arguments(a)
    a.add_argument("version", type=int)
    a.add_argument("--set", action="append", default=[], metavar="MERCHANT=VALUE",
                   help="use VALUE (0..1) for MERCHANT instead of the suggestion; '*'=VALUE edits the global one")
    a.add_argument("--reject", action="append", default=[], metavar="MERCHANT",
                   help="do not give MERCHANT its suggested threshold (it uses the global one)")
    a.add_argument("--user", default=None, help="who approves (default $RATCHET_USER, else the login name)")
    a.add_argument("--force", action="store_true",
                   help="approve even though the edits move a blocking contract clause's slice beyond its allowance "
                   "(needs --reason; the ledger records the clauses overridden)")
    a.add_argument("--reason", default=None, metavar="WHY", help="why the contract is overridden (with --force)")
    a.set_defaults(func=approve_cli)
    s = tsub.add_parser("status", help="history of cycles, acceptance and the graduation rule")
    registry_arguments(s)
    s.add_argument("--format", choices=["text", "json"], default="text")
    s.add_argument("--config", default=None, help="threshold policy (default contracts/thresholds.yaml)")
    s.set_defaults(func=status_cli)
    return t
