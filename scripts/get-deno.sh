#!/usr/bin/env bash
# Installs the pinned Deno binary from the npm registry into .tools/deno (the Supabase kit's
# tests find it there), then fetches the functions' npm dependencies once, as their locks say.
#
#   scripts/get-deno.sh        prints the path of the deno binary on its last line
#
# Needs npm. The package @deno/<platform> ships the official binary; no other download.
set -euo pipefail

DENO_VERSION=2.9.6
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) pkg=@deno/linux-x64-glibc ;;
  Linux-aarch64) pkg=@deno/linux-arm64-glibc ;;
  Darwin-arm64) pkg=@deno/darwin-arm64 ;;
  Darwin-x86_64) pkg=@deno/darwin-x64 ;;
  *) echo "get-deno.sh: no Deno package for $(uname -s) $(uname -m); install Deno yourself" >&2
     exit 2 ;;
esac
command -v npm >/dev/null || { echo "get-deno.sh: npm not found (apt-get install npm)" >&2; exit 2; }

dest=$root/.tools/deno
deno=$dest/node_modules/$pkg/deno
if ! [ -x "$deno" ] || ! "$deno" --version 2>/dev/null | grep -q "^deno $DENO_VERSION "; then
  mkdir -p "$dest"
  npm install --prefix "$dest" --no-save --no-audit --no-fund --loglevel=error "$pkg@$DENO_VERSION" >&2
fi
# Each function's deno.json maps its imports and its deno.lock pins them with their integrity:
# --frozen fails here, with the difference, if a deno.json no longer matches its lock.
DENO_NO_UPDATE_CHECK=1 "$deno" cache --quiet --frozen "$root"/supabase/functions/*/index.ts >&2
echo "$deno"
