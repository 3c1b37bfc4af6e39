#!/bin/sh
# apply_renames.sh — apply tools/api_renames.sed to every tracked source and
# doc file of the repository (C sources and headers, Markdown, CMake, scripts),
# in place. Run once from anywhere inside the work tree; prints the files it
# changed. The sed file itself and this script are left alone.
set -eu
root=$(git rev-parse --show-toplevel)
cd "$root"
sedfile=tools/api_renames.sed
git ls-files -- '*.c' '*.h' '*.inc' '*.md' '*.txt' '*.in' '*.sh' '*.py' '*.json' 'Makefile' |
    while IFS= read -r f; do
        case "$f" in
        tools/api_renames.sed | tools/apply_renames.sh) continue ;;
        esac
        [ -f "$f" ] || continue
        if sed -f "$sedfile" "$f" | cmp -s - "$f"; then continue; fi
        sed -i -f "$sedfile" "$f"
        echo "renamed in $f"
    done
