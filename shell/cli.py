"""`orq`: the command-line client. Exit codes: 0 ok, 1 job ERROR/CANCELLED, 2 usage,
3 server unreachable or 5xx, 4 authentication."""
from __future__ import annotations

import sys

from . import commands  # noqa: F401  (fills the registry)
from .client import OrqError
from .config import Config
from .registry import Context, dispatch

EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ctx = Context(Config.load())
    try:
        code = dispatch(argv, ctx)
    except OrqError as err:
        print(f"orq: {err}", file=sys.stderr)
        code = err.exit_code
    except KeyboardInterrupt:
        print("\norq: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        sys.stderr.close()  # `orq get jobs | head`: the reader left, nothing to report
        code = 0
    sys.exit(code)


if __name__ == "__main__":
    main()
