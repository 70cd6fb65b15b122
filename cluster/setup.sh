#!/usr/bin/env bash
# Installs what ray-apps needs on a Debian 12 machine, once: Python 3.11 with venv (a fresh
# Debian 12 has no python3, and its python3 cannot create a venv without python3-venv), CA
# certificates (pip over HTTPS), Java 17 (RayDP), redis-server, curl, and a virtual environment at
# .venv with the package and its pinned dependencies. Safe to run again: it only installs what
# is missing or what pyproject.toml changed. (The stack finds processes with psutil: no ps/ss.)
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3

missing=()
if ! command -v "$python" >/dev/null; then
  missing+=(python3 python3-venv)
elif ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
  missing+=(python3-venv)
fi
[ -s /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v curl >/dev/null || missing+=(curl)  # the README's and quick start's HTTP calls
{ java -version 2>&1 || true; } | grep -q 'version "17' || missing+=(openjdk-17-jre-headless)
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null; then
      echo "setup: run as root or install sudo: apt-get install ${missing[*]}" >&2
      exit 1
    fi
    sudo=(sudo)
  fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# A venv left without pip (e.g. created before python3-venv was there) is made again.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  echo "setup: creating .venv with $("$python" --version)"
  "$python" -m venv --clear .venv
fi
stamp=".venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing the package and its pinned dependencies into .venv (2-3 minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[test]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
