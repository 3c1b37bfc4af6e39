#!/bin/bash
# test_rpc_netns.sh — tierload against real ggml-rpc-server processes, each in a network
# namespace this script creates (a veth pair per host, addresses 10.213.N.0/24 of its own, links
# shaped with tc tbf: "fast" 10gbit, "slow" 1gbit, "thin" 50mbit), always torn down. Where
# namespaces cannot be made (not root, no ip/tc), the same checks run on 127.0.0.1 with the link
# speeds given as HOST:PORT@BW instead of shaped, and the script says so.
#
#   placement: on a slow and a fast host (slow listed first) the plan puts the 20-pass diffusion
#              model on the fast host's device, with the link speeds of the tc shaping
#   cache:     a server started with -c is sent a model once: the second run's bytes over the
#              link are at most 1% of the first run's, with 24 MiB tensors (cut into two equal
#              writes), 16 MiB ones, and 9 MiB and 2 MiB ones (below ggml's 10 MiB hash
#              threshold: packed into larger writes)
#   killed:    a server killed mid-run (over the thin link): the run names it, plans again on
#              the host that remains, reloads from the file and ends with the results of an
#              uninterrupted run (tensors checked, products, no mismatch)
#   silent:    the same with a server stopped (SIGSTOP) mid-run, lost after
#              TIERLOAD_RPC_TIMEOUT (2 s here), no hang; a listener that accepts and never
#              answers is refused when added (exit 9, "no answer")
#
# Expected values come from the shaping and the model written here, not from tierload.
# Timings are never asserted; every run is bounded by `timeout` so a hang fails.
#
# usage: test_rpc_netns.sh BUILD_DIR GGML_ROOT
set -u
build=$1
ggml=$2
tl=$build/tierload
srv=$ggml/bin/ggml-rpc-server

skip() {
    if [ "${CI:-}" = true ]; then echo "FAIL: $* (CI=true: a missing dependency is a failure)"; exit 1; fi
    echo "SKIP: $*"
    exit 77
}
[ -x "$srv" ] || skip "ggml not built: no $srv (run make ggml)"
[ -x "$tl" ] || skip "no $tl"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tl_rpcns.XXXXXX")
tag=$$
net=$((tag % 250 + 1))
pids=""
namespaces=""
links=""
cleanup() {
    for p in $pids; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    for l in $links; do ip link del "$l" 2>/dev/null; done
    for n in $namespaces; do ip netns del "$n" 2>/dev/null; done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
set +m # no job-control notices when servers are killed

fails=0
check() { # check NAME CONDITION-STATUS DETAIL
    if [ "$2" -eq 0 ]; then echo "ok   $1"; else echo "FAIL $1: $3"; fails=$((fails + 1)); fi
}

# --- hosts: a namespace each, or 127.0.0.1 ---
use_ns=1
why=""
if [ "$(id -u)" != 0 ]; then use_ns=0; why="not root"; fi
if [ $use_ns = 1 ] && ! command -v ip >/dev/null; then use_ns=0; why="no ip command"; fi
if [ $use_ns = 1 ] && ! command -v tc >/dev/null; then use_ns=0; why="no tc command"; fi
if [ $use_ns = 1 ] && ! ip netns add "tlp$tag" 2>/dev/null; then use_ns=0; why="ip netns add failed"; fi
[ $use_ns = 1 ] && ip netns del "tlp$tag"
if [ $use_ns = 1 ]; then
    echo "hosts: network namespaces with veth links shaped by tc (10.213.$net.0/24)"
else
    echo "hosts: 127.0.0.1, no namespaces ($why): link speeds given with @BW, not shaped"
fi

# host ROLE INDEX RATE: a namespace with one veth to this one, shaped both ways; sets ADDR
host() {
    local role=$1 i=$2 rate=$3 ns="tl$1$tag" h="tl${1:0:1}$tag" a=$((4 * $2 + 1))
    ns_of[$i]=$ns
    if [ $use_ns = 0 ]; then ADDR=127.0.0.1; return 0; fi
    ip netns add "$ns" || return 1
    namespaces="$namespaces $ns"
    ip link add "${h}h" type veth peer name "${h}n" || return 1
    links="$links ${h}h"
    ip link set "${h}n" netns "$ns"
    ip addr add "10.213.$net.$a/30" dev "${h}h"
    ip link set "${h}h" up
    ip netns exec "$ns" ip addr add "10.213.$net.$((a + 1))/30" dev "${h}n"
    ip netns exec "$ns" ip link set "${h}n" up
    ip netns exec "$ns" ip link set lo up
    tc qdisc add dev "${h}h" root tbf rate "$rate" burst 1mb latency 100ms || return 1
    ip netns exec "$ns" tc qdisc add dev "${h}n" root tbf rate "$rate" burst 1mb latency 100ms
    ADDR=10.213.$net.$((a + 1))
}

# serve INDEX PORT [-c]: a ggml-rpc-server on the host's address; sets EP and SPID
serve() {
    local i=$1 port=$2 cache=${3:-}
    local run=()
    [ $use_ns = 1 ] && run=(ip netns exec "${ns_of[$i]}")
    LLAMA_CACHE="$tmp/cache$i" LD_LIBRARY_PATH="$ggml/lib" "${run[@]}" "$srv" -H "${addr_of[$i]}" \
        -p "$port" -t 1 $cache >"$tmp/srv$i.log" 2>&1 &
    SPID=$!
    pids="$pids $SPID"
    EP=${addr_of[$i]}:$port
    for _ in $(seq 100); do # accepting? (a bare connect; the server serves one client at a time)
        (exec 3<>"/dev/tcp/${addr_of[$i]}/$port") 2>/dev/null && return 0
        kill -0 "$SPID" 2>/dev/null || break
        sleep 0.1
    done
    echo "server $i did not start: $(cat "$tmp/srv$i.log")"
    return 1
}

free_port() { /usr/bin/python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

declare -a ns_of addr_of
host slow 0 1gbit || { echo "FAIL: cannot set up host slow"; exit 1; }
addr_of[0]=$ADDR
host fast 1 10gbit || { echo "FAIL: cannot set up host fast"; exit 1; }
addr_of[1]=$ADDR
host thin 2 50mbit || { echo "FAIL: cannot set up host thin"; exit 1; }
addr_of[2]=$ADDR
# a fresh port for each server on the thin host: a killed server's port may linger in TIME_WAIT
if [ $use_ns = 1 ]; then
    ps0=50052 ps1=50052 ps2=50052 ps3=50053 ps4=50054
else
    ps0=$(free_port) ps1=$(free_port) ps2=$(free_port) ps3=$(free_port) ps4=$(free_port)
fi

# --- placement ---
serve 0 "$ps0" -c || exit 1
slow=$EP slow_pid=$SPID
serve 1 "$ps1" -c || exit 1
fast=$EP
echo "measured links:"
timeout 120 "$tl" devices --rpc "$slow,$fast" | grep '^rpc'
out=$(timeout 120 "$tl" plan --profile sdxl --rpc "$slow@1gbit,$fast@10gbit" --max-vram 8G 2>&1)
echo "$out" | grep -E '^  (rpc|diffusion|cond|vae)'
echo "$out" | grep -q '^  diffusion .* on rpc1:0 ' # rpc1 is the fast host (listed second)
check "placement: the fast host holds the 20-pass diffusion weights" $? "$out"

# --- cache: push once ---
# Four times: 24 MiB tensors (more than a 16 MiB staging buffer: cut into two 12 MiB writes, not
# 16 + 8, whose 8 would cross again on every run), 16 MiB ones (each write above ggml's 10 MiB hash
# threshold), and below it, where they cross the link again on every run unless packed into larger
# writes: 9 MiB ones (two make a pack larger than a staging buffer) and 2 MiB ones
for spec in 144:6 96:6 108:12 96:48; do
    size=${spec%:*} tensors=${spec#*:}
    model=$tmp/m$size-$tensors.gguf
    "$tl" mkmodel "$model" --size "${size}M" --tensors $tensors --profile llm >/dev/null || exit 1
    sent=()
    for i in 1 2; do
        j=$(timeout 300 "$tl" run "$model" --rpc "$slow" --backend '*=rpc0:0' --reserve other=0 \
            --pipeline other --json 2>"$tmp/err")
        rc=$?
        s=$(printf '%s' "$j" | /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); l=d["links"][0]; print(l["sent"], l["written"], d["totals"]["hash_mismatches"])' 2>/dev/null)
        echo "run $i of $tensors tensors over the slow link: status $rc; sent, written, hash mismatches: $s"
        sent[$i]=${s%% *}
        [ "$rc" = 0 ] && [ "${s##* }" = 0 ] || sent[$i]=""
    done
    [ -n "${sent[1]}" ] && [ -n "${sent[2]}" ] && [ "${sent[1]}" -gt 0 ] &&
        [ $((sent[2] * 100)) -le "${sent[1]}" ]
    check "cache, $((size / tensors)) MiB tensors: second run's bytes over the link <= 1% of the first's" $? \
        "first ${sent[1]:-?}, second ${sent[2]:-?}: $(cat "$tmp/err")"
done

# --- losing a host mid-run: killed, then stopped (silent past TIERLOAD_RPC_TIMEOUT=2 s) ---
# The run starts on the thin host (96 MiB take ~16 s at 50 Mbit/s) beside the slow one; the
# thin host is lost 2 s in; the run plans again without it and ends as the uninterrupted
# run on the slow host did: every tensor checked, every product equal to the file's.
# On 127.0.0.1 nothing is slow: the run makes 100 passes (each checks and multiplies every weight)
# so that it is still going when the host is lost.
pipe=other
[ $use_ns = 1 ] || pipe='other*100'
summary() { /usr/bin/python3 -c 'import json,sys; t=json.load(sys.stdin)["totals"]; print(t["tensors_checked"], t["hash_mismatches"], t["products"], t["product_mismatches"])' 2>/dev/null; }
ref=$(timeout 300 "$tl" run "$model" --rpc "$slow" --backend '*=rpc0:0' --reserve other=0 \
    --pipeline "$pipe" --compute ggml --json 2>"$tmp/err" | summary)
echo "uninterrupted run: tensors checked, hash mismatches, products, product mismatches: $ref"
lose() { # lose NAME SIGNAL PORT [ENV...]
    local name=$1 sig=$2 port=$3
    shift 3
    serve 2 "$port" || return 1
    local thin=$EP thin_pid=$SPID
    env "$@" timeout 300 "$tl" run "$model" --rpc "$slow,$thin" --backend '*=rpc1:0' \
        --reserve other=0 --pipeline "$pipe" --compute ggml --json >"$tmp/out" 2>"$tmp/err" &
    local run_pid=$!
    sleep 2
    kill "-$sig" "$thin_pid"
    wait "$run_pid"
    local rc=$?
    kill -9 "$thin_pid" 2>/dev/null
    local got
    got=$(summary <"$tmp/out")
    echo "$name mid-run: status $rc, result: $got; stderr: $(head -c 600 "$tmp/err")"
    [ $rc = 0 ] && grep -q "lost RPC server $thin" "$tmp/err" && [ -n "$ref" ] && [ "$got" = "$ref" ]
    check "$name: the run re-plans without the lost host and ends as the uninterrupted one" $? \
        "status $rc, '$got' vs '$ref'"
}
lose killed KILL "$ps2"
lose silent STOP "$ps3" TIERLOAD_RPC_TIMEOUT=2

# --- a listener that accepts and never answers, on the thin host ---
lport=$ps4
lrun=()
[ $use_ns = 1 ] && lrun=(ip netns exec "${ns_of[2]}")
"${lrun[@]}" /usr/bin/python3 -c "
import socket,time
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('${addr_of[2]}', $lport)); s.listen(4); c=s.accept(); time.sleep(60)" &
pids="$pids $!"
sleep 0.5
timeout 60 "$tl" devices --rpc "${addr_of[2]}:$lport" >/dev/null 2>"$tmp/err"
rc=$?
echo "silent listener: status $rc: $(cat "$tmp/err")"
[ $rc = 9 ] && grep -q "${addr_of[2]}:$lport" "$tmp/err" && grep -q "no answer" "$tmp/err"
check "a listener that never answers is refused (status 9, named, no answer)" $? "status $rc"

kill -9 "$slow_pid" 2>/dev/null
[ $fails = 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "all checks passed"
