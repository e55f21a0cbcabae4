#!/usr/bin/env bash
# Deploy orq.
#   scripts/deploy.sh local  [--port P] [--data-dir D] [--host H] [orq-server flags...]
#   scripts/deploy.sh lambda [--function-name NAME] [--region R] [--memory MB] [--package-only FILE.zip]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

deploy_local() {
  # the sandbox (bubblewrap), prlimit (util-linux), the jobs' python interpreter and
  # libseccomp (compiles the jobs' seccomp filter)
  install_packages bubblewrap util-linux python3 libseccomp2
  ensure_venv "."
  say "starting orq-server (Ctrl+C or SIGTERM stops it)"
  exec "$VENV/bin/orq-server" "$@"
}

deploy_lambda() {
  # (re)install the venv only when it cannot run the deploy code yet
  "$VENV/bin/python" -c "import boto3, server.deploy_lambda" 2>/dev/null || ensure_venv "." >/dev/null
  exec "$VENV/bin/python" -m server.deploy_lambda "$@"
}

case "${1:-}" in
  local) shift; deploy_local "$@" ;;
  lambda) shift; deploy_lambda "$@" ;;
  *) usage ;;
esac
