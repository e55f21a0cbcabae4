#!/usr/bin/env bash
# Install what the whole test suite needs on a fresh Debian machine, then run it.
#   scripts/test.sh [pytest args...]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ORQ_ROOT"

# bubblewrap: the sandbox; util-linux: prlimit; python3: the jobs' interpreter;
# libseccomp2: the jobs' seccomp filter; chromium: dashboard tests; tmux: the shell's
# terminal test; wrk: benchmarks
install_packages bubblewrap util-linux python3 libseccomp2 chromium tmux wrk
ensure_venv ".[test]"

say "ruff"
"$VENV/bin/ruff" check server shell tests bench
say "pytest"
exec "$VENV/bin/pytest" -q "$@"
