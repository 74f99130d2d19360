#!/usr/bin/env bash
# The root file system of the container tests' base image, as a tar: Debian bookworm with
# python3 and its venv module (what the Dockerfile's BASE_IMAGE must have), made with
# debootstrap from the Debian mirror. Needs root. tests/dockerengine.py imports the tar.
set -euo pipefail
out=$1
root=$(mktemp -d /tmp/illiad-base-XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root/fs" >/dev/null
rm -rf "$root/fs/var/cache/apt/archives" "$root/fs/var/lib/apt/lists" "$root/fs/usr/share/doc" "$root/fs/usr/share/man"
mkdir -p "$(dirname "$out")"
tar -C "$root/fs" -cf "$out.part" .
mv "$out.part" "$out"
