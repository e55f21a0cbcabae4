# Shared by deploy.sh and test.sh: system packages and the project virtualenv.
# shellcheck shell=bash

ORQ_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ORQ_VENV:-$ORQ_ROOT/.venv}"

say() { printf '==> %s\n' "$*" >&2; }

# install_packages PKG...: Debian packages, only those missing; needs root (or sudo).
install_packages() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { say "need root to install: ${missing[*]}"; return 1; }
    sudo="sudo"
  fi
  say "installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ensure_venv SPEC: a virtualenv at $VENV with orq installed (editable) as SPEC, e.g. ".[test]".
ensure_venv() {
  local python="${ORQ_PYTHON_BUILD:-python3}"
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "$python" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  say "installing orq$1 into $VENV"
  (cd "$ORQ_ROOT" && "$VENV/bin/python" -m pip install -q -e "$1" 2>&1 | grep -v -e '^WARNING' -e '^$' >&2 || true)
  "$VENV/bin/python" -c "import server, shell" || { say "installing orq failed"; return 1; }
}
