#!/bin/sh
# check_manpage.sh — tierload(1) as installed: `cmake --install` to a temporary prefix puts
# share/man/man1/tierload.1 there; groff reads it without a warning; `man -l` (else groff
# alone) renders it; and the rendered page has a section for every command that the
# installed `tierload --help` lists, holding that command's usage line and option lines as
# `tierload CMD --help` prints them.
#
# usage: check_manpage.sh BUILD_DIR
set -eu
build=$1
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tl_manpage.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

fail() {
    echo "FAIL: $*"
    exit 1
}
skip() {
    if [ "${CI:-}" = true ]; then fail "$* (CI=true: a missing dependency is a failure)"; fi
    echo "SKIP: $*"
    exit 77
}

command -v groff >/dev/null 2>&1 || skip "no groff (Debian: groff-base, installed by make deps)"
cmake --install "$build" --prefix "$tmp/p" >"$tmp/install.log" 2>&1 ||
    { cat "$tmp/install.log"; fail "cmake --install --prefix $tmp/p"; }
page="$tmp/p/share/man/man1/tierload.1"
[ -f "$page" ] || fail "no share/man/man1/tierload.1 in the install"
cli="$tmp/p/bin/tierload"

# valid roff: groff reports nothing with every warning on
groff -man -ww -z "$page" >"$tmp/groff.err" 2>&1 || true
[ ! -s "$tmp/groff.err" ] || { cat "$tmp/groff.err"; fail "groff warns about tierload.1"; }

# rendered as a reader sees it, wide enough that no line wraps; bold/underline overstrikes and a
# typographic minus (U+2212) for '\-' folded to plain text
if command -v man >/dev/null 2>&1; then
    how="man -l"
    MANWIDTH=250 LC_ALL=C.UTF-8 man -l "$page" >"$tmp/page.raw" 2>"$tmp/render.err" ||
        { cat "$tmp/render.err"; fail "man -l tierload.1"; }
else
    how="groff -man -Tutf8"
    LC_ALL=C.UTF-8 groff -man -Tutf8 -P-cbou -rLL=250n "$page" >"$tmp/page.raw" 2>"$tmp/render.err" ||
        { cat "$tmp/render.err"; fail "groff -man -Tutf8 tierload.1"; }
fi
sed -e 's/.\x08//g' -e 's/\xe2\x88\x92/-/g' -e 's/^ *//' "$tmp/page.raw" >"$tmp/page.txt"
grep -q '^TIERLOAD(1)' "$tmp/page.txt" || fail "$how: no TIERLOAD(1) header"

# every line of a help text (leading blanks dropped) must be a line of the page
has_lines() { # $1: help text file, $2: what it is
    while IFS= read -r line; do
        l=$(printf '%s' "$line" | sed 's/^ *//')
        [ -n "$l" ] || continue
        grep -qxF -- "$l" "$tmp/page.txt" || fail "$how: the page lacks this line of $2: $l"
    done <"$1"
}

"$cli" --help >"$tmp/top.txt" || fail "installed tierload --help"
has_lines "$tmp/top.txt" "tierload --help"
cmds=$(sed -n '/^commands:$/,/^$/s/^  \([a-z][a-z0-9-]*\)  *[^ ].*$/\1/p' "$tmp/top.txt")
[ -n "$cmds" ] || fail "installed tierload --help lists no commands"
n=0
for c in $cmds; do
    grep -qx "tierload $c" "$tmp/page.txt" || fail "$how: no section 'tierload $c'"
    "$cli" "$c" --help >"$tmp/cmd.txt" || fail "installed tierload $c --help"
    has_lines "$tmp/cmd.txt" "tierload $c --help"
    n=$((n + 1))
done
grep -qF "$("$cli" --version)" "$tmp/page.txt" || fail "$how: the page does not name $("$cli" --version)"
echo "tierload.1: installed, renders with $how, $n commands each with its whole --help text"
