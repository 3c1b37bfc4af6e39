#!/bin/sh
# gen_manpage.sh — tierload(1) in roff, written from the CLI's own help: the text of
# `tierload --help` is the description, and each command that it lists gets a section with
# the text of `tierload CMD --help`, kept line for line (no-fill), so the page says exactly
# what --help says. Run at build time by CMake (target tierload_man).
#
# usage: gen_manpage.sh TIERLOAD OUT "ONE-LINE DESCRIPTION"
set -eu
cli=$1 out=$2 what=$3

fail() {
    echo "gen_manpage.sh: $*" >&2
    exit 1
}

# roff-escape plain text: backslashes, hyphens (so options stay copyable as ASCII '-'), and a
# leading '.' or "'" that roff would read as a request.
esc() {
    sed -e 's/\\/\\e/g' -e 's/-/\\-/g' -e "s/^\\([.']\\)/\\\\\\&\\1/"
}

# A help text as a no-fill block.
block() {
    echo ".nf"
    printf '%s\n' "$1" | esc
    echo ".fi"
}

version=$("$cli" --version) || fail "$cli --version failed"
top=$("$cli" --help) || fail "$cli --help failed"
# the command list: the indented lines under "commands:" up to the first blank line
cmds=$(printf '%s\n' "$top" | sed -n '/^commands:$/,/^$/s/^  \([a-z][a-z0-9-]*\)  *[^ ].*$/\1/p')
[ -n "$cmds" ] || fail "no commands under 'commands:' in $cli --help"

tmp="$out.tmp"
{
    printf '.TH TIERLOAD 1 "" "%s" "User Commands"\n' "$(printf '%s' "$version" | esc)"
    echo ".SH NAME"
    printf 'tierload \\- %s\n' "$(printf '%s' "$what" | esc)"
    echo ".SH SYNOPSIS"
    echo ".B tierload"
    echo ".I command"
    echo ".RI [ options ]"
    echo ".br"
    echo ".B tierload"
    echo ".I command"
    echo ".B \\-\\-help"
    echo ".br"
    echo ".B tierload \\-\\-help"
    echo ".br"
    echo ".B tierload \\-\\-version"
    echo ".SH DESCRIPTION"
    block "$top"
    echo ".SH COMMANDS"
    for c in $cmds; do
        h=$("$cli" "$c" --help) || fail "$cli $c --help failed"
        echo ".SS tierload $c"
        block "$h"
    done
    echo ".SH SEE ALSO"
    echo "The README and docs/ (ARCHITECTURE.md, EMBEDDING.md, INTEGRATION.md) of the source;"
    echo ".BR pkg\\-config (1)"
    echo "with the module name"
    echo ".BR tierload ."
} >"$tmp"
mv "$tmp" "$out"
