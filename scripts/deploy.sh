#!/usr/bin/env bash
# Deploy orq.
#   scripts/deploy.sh local  [--port P] [--data-dir D] [--runtimes c,cpp,java,...] [orq-server flags...]
#   scripts/deploy.sh lambda [--function-name NAME] [--region R] [--memory MB] [--package-only FILE.zip]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

deploy_local() {
  # the sandbox (bubblewrap), prlimit (util-linux), the jobs' python interpreter, libseccomp
  # (compiles the jobs' seccomp filter) and the image tools (mmdebstrap: images from Debian
  # packages; skopeo + umoci: container images)
  install_packages bubblewrap util-linux python3 libseccomp2 mmdebstrap umoci skopeo
  ensure_venv "."
  # --runtimes LIST: build the images those languages need first (a second run reuses them)
  local args=() runtimes="" data_dir="${ORQ_DATA_DIR:-./data}"
  while [ $# -gt 0 ]; do
    case "$1" in
      --runtimes) runtimes="${2:?--runtimes needs a list, e.g. c,cpp,java}"; shift 2 ;;
      --runtimes=*) runtimes="${1#*=}"; shift ;;
      --data-dir) data_dir="${2:?}"; args+=("$1" "$2"); shift 2 ;;
      --data-dir=*) data_dir="${1#*=}"; args+=("$1"); shift ;;
      *) args+=("$1"); shift ;;
    esac
  done
  if [ -n "$runtimes" ]; then
    say "building the images for: $runtimes"
    "$VENV/bin/python" -m server.images.provision --runtimes "$runtimes" --data-dir "$data_dir"
  fi
  say "starting orq-server (Ctrl+C or SIGTERM stops it)"
  exec "$VENV/bin/orq-server" "${args[@]}"
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
