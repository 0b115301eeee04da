"""`python -m ratchet.serving [flags]`: the decision service, same flags as `ratchet serve`."""

from __future__ import annotations

import sys

from ratchet.errors import RatchetError


def main(argv: list[str] | None = None) -> int:
    from ratchet.serving.config import build_parser, options_from_args

    args = build_parser().parse_args(argv)
    try:
        options = options_from_args(args)
    except RatchetError as exc:
        print(f"ratchet serve: {exc}", file=sys.stderr)
        return 2
    from ratchet.serving.app import serve

    return serve(options)


if __name__ == "__main__":
    sys.exit(main())
