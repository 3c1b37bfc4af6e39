#!/bin/sh
# check_includes.sh — every arrow points down. Reads the layer table of docs/ARCHITECTURE.md
# (the backticked `folder/` of each row, and in its last column the layers it may use and
# whether it may include the public header tierload.h) and checks every src/*/*.[ch] against it:
#   - #include "x/..." only from the file's own folder or a folder its row names;
#     #include "tierload.h" only where the row names tierload.h;
#   - every folder under src/ has a row;
#   - getenv only in core/env.c (the one list of environment variables);
#   - malloc/calloc/realloc/strdup/strndup/posix_memalign/aligned_alloc/pthread_create only in
#     os/ (everything else goes through os/ so fault injection reaches it) and the CLI program.
# Files still being converted by other work are listed in PENDING_* below; remove them there
# as they are converted.
#
# usage: tools/check_includes.sh [ROOT]     check the tree at ROOT (default: this repository)
#        tools/check_includes.sh --self-test plant wrong includes in a scratch copy and check
#                                            that each one is caught
set -u

PENDING_GETENV=""
PENDING_ALLOC=""
# Formatting an error message must not itself be a fault-injection point (a failed message
# would hide the failure it reports), so core/error.c allocates with plain malloc.
EXEMPT_ALLOC="src/core/error.c"
# The CLI's own variables (the demo's cache folder: XDG_CACHE_HOME, HOME) are not the library's.
EXEMPT_GETENV="src/cli/cmd_demo.c"

here=$(cd "$(dirname "$0")/.." && pwd)

check() {
    root=$1
    doc="$root/docs/ARCHITECTURE.md"
    [ -f "$doc" ] || { echo "check_includes: $doc missing"; return 2; }
    # "layer allowed... [PUBLIC]" per table row
    rules=$(awk -F'|' '
        /^\| `[a-z_]+\/` \|/ {
            layer = $2; gsub(/[ `\/]/, "", layer)
            use = $(NF - 1); line = layer
            if (use ~ /tierload\.h/) line = line " PUBLIC"
            gsub(/\([^)]*\)/, "", use); gsub(/`[^`]*tierload\.h`/, "", use)
            n = split(use, w, /[ ,`\/]+/)
            for (i = 1; i <= n; i++) if (w[i] ~ /^[a-z_]+$/ && w[i] != "only" && w[i] != "libc") line = line " " w[i]
            print line
        }' "$doc")
    [ -n "$rules" ] || { echo "check_includes: no layer table in $doc"; return 2; }
    bad=0
    for d in "$root"/src/*/; do
        layer=$(basename "$d")
        if ! printf '%s\n' "$rules" | grep -q "^$layer\( \|\$\)"; then
            echo "src/$layer/: folder has no row in the layer table of docs/ARCHITECTURE.md"
            bad=1
        fi
    done
    out=$(cd "$root" && grep -H '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' src/*/*.c src/*/*.h 2>/dev/null |
        awk -v rules="$rules" '
        BEGIN {
            n = split(rules, r, "\n")
            for (i = 1; i <= n; i++) {
                k = split(r[i], w, " ")
                for (j = 2; j <= k; j++) ok[w[1] "," w[j]] = 1
                may[w[1]] = substr(r[i], length(w[1]) + 1)
            }
        }
        {
            file = substr($0, 1, index($0, ":") - 1)
            split(file, p, "/"); layer = p[2]
            inc = $0; sub(/^[^"]*"/, "", inc); sub(/".*$/, "", inc)
            if (inc == "tierload.h") {
                if (!ok[layer ",PUBLIC"]) print file ": includes the public header tierload.h; " layer "/ may use:" may[layer]
            } else if (index(inc, "/")) {
                top = substr(inc, 1, index(inc, "/") - 1)
                if (top != layer && !ok[layer "," top]) print file ": includes \"" inc "\"; " layer "/ may use:" may[layer]
            } else {
                print file ": includes \"" inc "\"; name headers by folder (\"" layer "/" inc "\")"
            }
        }')
    if [ -n "$out" ]; then
        printf '%s\n' "$out"
        bad=1
    fi
    # code, not comments: drop /* ... */ on one line and // comments before matching
    exempt_env="src/core/env.c $PENDING_GETENV $EXEMPT_GETENV"
    exempt_alloc="$PENDING_ALLOC $EXEMPT_ALLOC"
    out=$(cd "$root" && awk -v env_ok=" $exempt_env " -v alloc_ok=" $exempt_alloc " '
        FNR == 1 { split(FILENAME, p, "/"); layer = p[2] }
        {
            line = $0
            gsub(/\/\*.*\*\//, "", line); sub(/\/\/.*/, "", line)
            if (line ~ /(^|[^_[:alnum:].>])getenv[[:space:]]*\(/ && index(env_ok, " " FILENAME " ") == 0)
                print FILENAME ":" FNR ":" $0 "   <- getenv outside core/env.c"
            if (layer != "os" && layer != "cli" && index(alloc_ok, " " FILENAME " ") == 0 &&
                line ~ /(^|[^_[:alnum:].>])(malloc|calloc|realloc|strdup|strndup|posix_memalign|aligned_alloc|pthread_create)[[:space:]]*\(/)
                print FILENAME ":" FNR ":" $0 "   <- allocate and start threads through os/"
        }' src/*/*.c src/*/*.h)
    if [ -n "$out" ]; then
        printf '%s\n' "$out"
        bad=1
    fi
    return $bad
}

self_test() {
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    fails=0
    fresh() {
        rm -rf "$tmp/t"
        mkdir -p "$tmp/t/docs"
        cp -R "$here/src" "$tmp/t/src"
        cp "$here/docs/ARCHITECTURE.md" "$tmp/t/docs/"
    }
    expect() { # name, expected: pass|fail, needle in the output
        out=$(check "$tmp/t" 2>&1)
        rc=$?
        if [ "$2" = pass ] && [ $rc -ne 0 ]; then
            echo "self-test $1: expected a pass, got:"; echo "$out"; fails=$((fails + 1))
        elif [ "$2" = fail ] && { [ $rc -eq 0 ] || ! printf '%s' "$out" | grep -q "$3"; }; then
            echo "self-test $1: expected a failure naming '$3', got rc=$rc:"; echo "$out"; fails=$((fails + 1))
        else
            echo "self-test $1: ok"
        fi
    }
    fresh; expect clean pass ""
    fresh; printf '#include "devices/devices.h"\n' >>"$tmp/t/src/os/posix.c"
    expect os-includes-devices fail 'src/os/posix.c: includes "devices/devices.h"'
    fresh; printf '#include "tierload.h"\n' >>"$tmp/t/src/os/thread.c"
    expect os-includes-public-header fail 'src/os/thread.c: includes the public header'
    fresh; printf '#include "plan/plan.h"\n' >>"$tmp/t/src/model/names.c"
    expect model-includes-plan fail 'src/model/names.c: includes "plan/plan.h"'
    fresh; printf '#include "os/os.h"\n' >>"$tmp/t/src/cli/main.c"
    expect cli-includes-os fail 'src/cli/main.c: includes "os/os.h"'
    fresh; printf '#include "io/verify.h"\n' >>"$tmp/t/src/core/bytes.c"
    expect core-includes-io fail 'src/core/bytes.c: includes "io/verify.h"'
    fresh; mkdir "$tmp/t/src/newlayer"; printf 'int x;\n' >"$tmp/t/src/newlayer/a.c"
    expect unlisted-folder fail 'src/newlayer/: folder has no row'
    fresh; printf 'static const char *e(void) { return getenv("X"); }\n' >>"$tmp/t/src/model/names.c"
    expect getenv fail 'src/model/names.c:.*getenv outside'
    fresh; printf 'static void *a(void) { return malloc(4); }\n' >>"$tmp/t/src/devices/sim.c"
    expect raw-malloc fail 'src/devices/sim.c:.*through os'
    fresh; printf '#include "names.h"\n' >>"$tmp/t/src/model/names.c"
    expect bare-include fail 'src/model/names.c: includes "names.h"; name headers by folder'
    fresh; printf '/* a comment may say malloc(n) and getenv(x) */\n' >>"$tmp/t/src/model/names.c"
    expect comment-ok pass ""
    [ $fails -eq 0 ]
}

if [ "${1:-}" = "--self-test" ]; then
    self_test
else
    check "${1:-$here}"
fi
