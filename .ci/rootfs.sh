#!/usr/bin/env bash
# Makes a minbase Debian root filesystem for the zipapp tests (tests/zipapp/):
#   .ci/rootfs.sh NAME SUITE [PACKAGE,...]
# into .ci/rootfs/NAME (git-ignored; nothing is cached outside the work tree).
# Only what a user would install goes in: python3 and, where asked, unixodbc and
# tdsodbc; never the project's pip dependencies. Safe to run twice: a finished
# root filesystem (marker file .dstream-ready) is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
name="$1" suite="$2" packages="${3:-python3}"
dir=".ci/rootfs/$name"
[ -f "$dir/.dstream-ready" ] && exit 0
rm -rf "$dir"
mkdir -p "$dir"
mirror="http://deb.debian.org/debian"
start=$(date +%s)
if ! debootstrap --variant=minbase --include="$packages" "$suite" "$dir" "$mirror" >".ci/rootfs/$name.log" 2>&1; then
    echo "debootstrap $suite failed; last lines of .ci/rootfs/$name.log:" >&2
    tail -5 ".ci/rootfs/$name.log" >&2
    exit 1
fi
# what the tests do not need: apt's package cache and the docs (smaller, faster copies)
rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/usr/share/doc "$dir"/usr/share/man "$dir"/usr/share/locale
echo "$suite $packages" >"$dir/.dstream-ready"
echo "rootfs $name ($suite: $packages) in $(( $(date +%s) - start )) s, $(du -sh "$dir" | cut -f1)" >&2
