#!/bin/sh
# check_no_outside_paths.sh — no file of the repository mentions a folder named "shared" beside
# the checkout (a dot-dot path to it, written as a path or joined from parts). Such a folder
# exists only on some developers' machines: a user who clones the project, a packager and a
# fork have none, so a test, example, script or build file that reads it fails for them, and
# documentation that names it points at nothing. The project owns its test data instead
# (tests/data, tools/make_testdata.sh).
#
# usage: check_no_outside_paths.sh SOURCE_DIR
# The files checked: those git tracks in SOURCE_DIR; outside a git checkout (a release
# tarball), every file there but build folders. The patterns are written so that this file
# does not match them itself.
set -eu
src=${1:?usage: check_no_outside_paths.sh SOURCE_DIR}
dots='[.][.]'
pattern="$dots/shared|$dots[\"'] *[,+] *[\"']/?shared"
out=$(mktemp "${TMPDIR:-/tmp}/tl_outside.XXXXXX")
trap 'rm -f "$out"' EXIT
cd "$src"
if command -v git >/dev/null 2>&1 && git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z | xargs -0 grep -nIE -s -e "$pattern" -- >"$out" || true
    what="tracked files"
else
    grep -rnIE -s --exclude-dir='build*' --exclude-dir=.git -e "$pattern" . >"$out" || true
    what="files"
fi
if [ -s "$out" ]; then
    echo "FAIL: $what that name a folder outside the checkout (the project must not read it):"
    cat "$out"
    exit 1
fi
echo "no $what under $src mention a folder outside the checkout"
