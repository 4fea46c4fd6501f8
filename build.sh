#!/usr/bin/env bash
# Builds dist/dstream.pyz: one reproducible zipapp holding dstream, its built-in
# providers and their dependencies, for CPython 3.10-3.14 on Linux x86_64 and
# aarch64 (packaging/build_pyz.py says how). Needs pip and network access to the
# package index at build time; the host that runs the file needs neither.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" -m pip --version >/dev/null
if ! "$PYTHON" -m shiv --version >/dev/null 2>&1; then
    "$PYTHON" -m pip install --quiet "shiv==1.0.8"
fi
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-1767225600}"  # 2026-01-01: fixed timestamps
export PYTHONHASHSEED=0
rm -rf build dist/dstream.pyz ./*.egg-info
mkdir -p dist
"$PYTHON" packaging/build_pyz.py dist/dstream.pyz
echo "built dist/dstream.pyz ($(du -h dist/dstream.pyz | cut -f1), sha256 $(sha256sum dist/dstream.pyz | cut -c1-16)...)" >&2
