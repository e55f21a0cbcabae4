#!/usr/bin/env bash
# Install what the whole test suite needs on a fresh Debian machine, then run it.
#   scripts/test.sh [pytest args...]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ORQ_ROOT"

# bubblewrap: the sandbox; util-linux: prlimit (and unshare, mount and git: the installed
# wheel's test hides the checkout and lists its files); python3: the jobs' interpreter;
# libseccomp2: the jobs' seccomp filter; mmdebstrap, umoci, skopeo: images; busybox-static:
# the tests' offline OCI images; chromium: dashboard tests; tmux: the shell's terminal test;
# wrk: benchmarks
install_packages bubblewrap util-linux mount git python3 libseccomp2 mmdebstrap umoci skopeo \
  busybox-static chromium tmux wrk
# the test extra also brings build (the wheel and sdist), openapi-python-client and
# schemathesis (the OpenAPI document judged by outside tools)
ensure_venv ".[test]"

say "ruff"
"$VENV/bin/ruff" check server shell tests bench
say "pytest"
exec "$VENV/bin/pytest" -q "$@"
