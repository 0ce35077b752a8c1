#!/usr/bin/env bash
# Installs Debian's Chromium for the browser test tier, if it is missing. Needs root (or sudo).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-system-deps: /usr/bin/chromium is missing and we are not root; install Debian's 'chromium' package" >&2
    exit 1
  fi
fi
echo "install-system-deps: installing Debian's chromium (browser tests) ..." >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
