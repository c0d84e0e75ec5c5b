#!/usr/bin/env bash
# Install a Debian package with apt-get unless it is installed already (the question sets'
# documents come from Debian packages). Usage: bash bench/natural/ensure_package.sh PACKAGE
set -euo pipefail
PKG="$1"
if ! dpkg-query -W -f='${Status}' "$PKG" 2>/dev/null | grep -q "install ok installed"; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    if ! $SUDO apt-get install -y "$PKG"; then
        $SUDO apt-get update
        $SUDO apt-get install -y "$PKG"
    fi
fi
