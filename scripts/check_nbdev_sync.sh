#!/usr/bin/env bash
# Fails when the notebooks and the package disagree: nbdev-clean and nbdev-export must change nothing.
# Works on a dirty tree too: it compares the tree's full state (tracked diffs and untracked files) before and after.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
bin=${VENV:-.venv}/bin
state() { { git status --porcelain; git diff; git ls-files --others --exclude-standard -z | xargs -0 -r sha1sum; } | sha1sum; }
before=$(state)
"$bin/nbdev-clean"
after_clean=$(state)
if [ "$before" != "$after_clean" ]; then
  echo "nbdev-clean changed notebooks: run 'make sync' (nbdev-clean + nbdev-export) and commit the result." >&2
  git status --short >&2; exit 1
fi
"$bin/nbdev-export"
after_export=$(state)
if [ "$before" != "$after_export" ]; then
  echo "nbdev-export changed the package: s3lib/ is out of sync with nbs/. Run 'make sync' and commit." >&2
  git status --short >&2; exit 1
fi
echo "notebooks and package are in sync"
