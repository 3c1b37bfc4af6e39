#!/bin/bash
# peer_rpc.sh BUILD_DIR [GGML_ROOT] — llama.cpp's own --rpc split against tierload's, on the same
# `tierload mkmodel --profile llama` model (TL_BENCH_RPC_SIZE, default 2G, F32; its K and V
# projections, 2 MiB each, are below ggml's 10 MiB hash threshold) and two ggml-rpc-server hosts,
# each in a network namespace made here with a veth link shaped by tc (slow 1gbit, fast 10gbit),
# servers started with their cache (-c). Each engine gets fresh servers (empty caches), both sets
# up at once: a first run of each to the first token (n-predict 1: load + prompt + one token),
# then TL_BENCH_ROUNDS (3) alternating rounds of a 1-token and a 65-token run of each.
#   llama.cpp: llama-oracle --rpc (libllama of the source build: split by layers over the
#              servers' devices, every layer offloaded, as llama.cpp's --rpc does)
#   tierload:  tl-llama --rpc SLOW@1gbit,FAST@10gbit --split-devices rpc0:0,rpc1:0 --split-mode
#              row (the examples/llama engine, every matrix split by rows so that both servers
#              compute every block at once; the links given as shaped, so no measuring transfer)
# Alike for both: time to first token = wall time of the 1-token run, measured from outside;
# tokens/s = 65 / the median decode time of the 65-token runs (the 65 single-token evaluations
# after the prompt's, timed by each engine's own monotonic clock: tl-llama's --json decode_s,
# llama-oracle's decode_s; also printed from outside, 64 / (median wall of the 65-token runs -
# median wall of the 1-token runs), which carries the load's noise); bytes per host = the
# host-side veth's tx bytes over the run; peak memory per host = each server's VmHWM over its
# engine's runs (printed, no limit). Figures, each beside its limit:
#   - tierload's second run (the first 1-token round) bytes over the links / its first run's: <= 1%
#   - tokens/s tierload / llama.cpp: >= 1
#   - time to first token, first run, tierload / llama.cpp: <= 1
#   - the fast host killed after the first token (at the warm time to first token + 0.2 s) of a
#     65-token run: tierload's tokens equal the uninterrupted run's (tl-llama re-places the weights
#     on the slow host and reloads them from the file)
# Exit 0 when every limit holds, 1 on a miss, 77 without root / ip / tc / the ggml build.
set -u
BUILD=${1:-build}
GGML=${2:-$BUILD/ggml}
SIZE=${TL_BENCH_RPC_SIZE:-2G}
srv=$GGML/bin/ggml-rpc-server
for f in "$BUILD/tl-llama" "$BUILD/llama-oracle" "$srv"; do
    [ -x "$f" ] || { echo "peer_rpc: $f missing (make ggml, then reconfigure)"; exit 77; }
done
[ "$(id -u)" = 0 ] && command -v ip >/dev/null && command -v tc >/dev/null ||
    { echo "peer_rpc: needs root, ip and tc for the shaped namespaces"; exit 77; }
T=$(mktemp -d "${TMPDIR:-/tmp}/tl-peer-rpc.XXXXXX") || exit 2
tag=$$
net=$((tag % 250 + 1))
pids="" namespaces="" links=""
cleanup() {
    for p in $pids; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    for l in $links; do ip link del "$l" 2>/dev/null; done
    for n in $namespaces; do ip netns del "$n" 2>/dev/null; done
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
set +m

declare -a ns_of addr_of veth_of
host() { # ROLE INDEX RATE
    local ns="tlb$1$tag" h="tb${1:0:1}$tag" a=$((4 * $2 + 1))
    ip netns add "$ns" || return 1
    namespaces="$namespaces $ns"
    ip link add "${h}h" type veth peer name "${h}n" || return 1
    links="$links ${h}h"
    ip link set "${h}n" netns "$ns"
    ip addr add "10.214.$net.$a/30" dev "${h}h"
    ip link set "${h}h" up
    ip netns exec "$ns" ip addr add "10.214.$net.$((a + 1))/30" dev "${h}n"
    ip netns exec "$ns" ip link set "${h}n" up
    ip netns exec "$ns" ip link set lo up
    tc qdisc add dev "${h}h" root tbf rate "$3" burst 1mb latency 100ms
    ip netns exec "$ns" tc qdisc add dev "${h}n" root tbf rate "$3" burst 1mb latency 100ms
    ns_of[$2]=$ns addr_of[$2]=10.214.$net.$((a + 1)) veth_of[$2]=${h}h
}
host slow 0 1gbit && host fast 1 10gbit || { echo "peer_rpc: cannot set up the hosts"; exit 1; }
port=50060
spid=()
serve() { # fresh servers (new ports, empty caches)
    port=$((port + 1))
    for i in 0 1; do
        rm -rf "$T/cache$i.$port"
        LLAMA_CACHE="$T/cache$i.$port" LD_LIBRARY_PATH="$GGML/lib" ip netns exec "${ns_of[$i]}" \
            "$srv" -H "${addr_of[$i]}" -p "$port" -t 1 -c >"$T/srv$i.log" 2>&1 &
        spid[$i]=$!
        pids="$pids $!"
        for _ in $(seq 100); do
            (exec 3<>"/dev/tcp/${addr_of[$i]}/$port") 2>/dev/null && break
            sleep 0.1
        done
    done
    EPS="${addr_of[0]}:$port,${addr_of[1]}:$port"
    TLEPS="${addr_of[0]}:$port@1gbit,${addr_of[1]}:$port@10gbit"
}
tx() { echo $(($(cat /sys/class/net/${veth_of[0]}/statistics/tx_bytes))) $(($(cat /sys/class/net/${veth_of[1]}/statistics/tx_bytes))); }
tokens=1,50,23,99,150,7,88,200,31,64,12,250,3,77,140,19,42
one() { # ENGINE NAME N: one run; appends "NAME wall slow_bytes fast_bytes greedy" to $T/runs
    local eng=$1 name=$2 n=$3 b0 b1 t0 t1 rc
    read -r b0 b1 < <(tx)
    t0=$(date +%s.%N)
    if [ "$eng" = llamacpp ]; then
        "$BUILD/llama-oracle" "$T/m.gguf" --tokens $tokens --n-predict "$n" --logits "$T/$name.f32" \
            --rpc "$LC_EPS" >"$T/$name.out" 2>"$T/$name.err"
    else
        "$BUILD/tl-llama" "$T/m.gguf" --tokens $tokens --n-predict "$n" --logits "$T/$name.f32" \
            --rpc "$TL_EPS" --split-devices rpc0:0,rpc1:0 --split-mode row --json \
            >"$T/$name.out" 2>"$T/$name.err"
    fi
    rc=$?
    t1=$(date +%s.%N)
    read -r c0 c1 < <(tx)
    dec=$(sed -n 's/.*"decode_s":\([0-9.]*\).*/\1/p; s/^llama-oracle: decode_s \([0-9.]*\)$/\1/p' \
        "$T/$name.out" "$T/$name.err" | head -1)
    echo "$name $(echo "$t1 - $t0" | bc) $((c0 - b0)) $((c1 - b1)) rc=$rc $(head -1 "$T/$name.out" | tr ' ' '_') ${dec:-nan}" >>"$T/runs"
    [ $rc = 0 ] || { echo "peer_rpc: $name failed ($rc): $(head -c 400 "$T/$name.err")"; }
}
"$BUILD/tierload" mkmodel "$T/m.gguf" --profile llama --size "$SIZE" --dtype F32 >/dev/null || exit 2
: >"$T/runs"
# each engine its own fresh servers, both sets up at once; first runs, then ROUNDS alternating
# rounds of a 1-token and a 65-token run of each engine (medians: one pair of walls varies by
# more than the difference measured)
serve
LC_EPS=$EPS lc_pids="${spid[*]}"
serve
TL_EPS=$TLEPS tl_pids="${spid[*]}"
one llamacpp llamacpp.first 1
one tierload tierload.first 1
for r in $(seq "${TL_BENCH_ROUNDS:-3}"); do
    for eng in llamacpp tierload; do
        one $eng $eng.second.$r 1
        one $eng $eng.gen.$r 65
    done
done
# peak memory per host: each server's VmHWM over its engine's runs (slow, then fast)
hwm() { for p in $1; do awk '/^VmHWM/ {printf "%s ", $2}' "/proc/$p/status" 2>/dev/null || printf "0 "; done; }
echo "llamacpp $(hwm "$lc_pids")" >"$T/peaks"
echo "tierload $(hwm "$tl_pids")" >>"$T/peaks"
kill -9 $lc_pids $tl_pids
# the fast host killed after the first token (the warm run's time to first token, + 0.2 s)
serve
TL_EPS=$TLEPS
one tierload tierload.warmup 1
one tierload tierload.warm 1
ttft=$(awk '$1 == "tierload.warm" {print $2 + 0.2}' "$T/runs")
(sleep "$ttft"; kill -9 "${spid[1]}" 2>/dev/null) &
one tierload tierload.killed 65
cat "$T/runs"
/usr/bin/python3 - "$T/runs" "$SIZE" "$T/peaks" <<'PY'
import sys
runs = {}
for line in open(sys.argv[1]):
    f = line.split()
    runs[f[0]] = dict(wall=float(f[1]), slow=int(f[2]), fast=int(f[3]), ok=f[4] == "rc=0",
                      greedy=f[5] if len(f) > 5 else "", decode=float(f[6]) if len(f) > 6 else
                      float("nan"))
print(f"model {sys.argv[2]} F32; hosts: slow 1gbit, fast 10gbit (tc tbf, network namespaces)")
for n, r in runs.items():
    print(f"  {n:18} {'ok ' if r['ok'] else 'ERR'} wall {r['wall']:7.2f} s  decode "
          f"{r['decode']:6.2f} s  bytes to slow {r['slow'] / 2**20:9.1f} MiB, to fast "
          f"{r['fast'] / 2**20:9.1f} MiB")
peaks = {}
for line in open(sys.argv[3]):
    f = line.split()
    peaks[f[0]] = [int(v) for v in f[1:]]
for e in ("llamacpp", "tierload"):
    v = peaks.get(e, [])
    if len(v) == 2:
        print(f"  peak memory per host ({e}'s servers, VmHWM): slow {v[0] / 1024:.0f} MiB, "
              f"fast {v[1] / 1024:.0f} MiB")
miss = 0
def figure(label, value, limit, ok):
    global miss
    print(f"  {label:<62} {value:>10}   limit {limit:<8} {'ok' if ok else 'MISS'}")
    miss += not ok
def g(n, k):
    return runs.get(n, {}).get(k, float("nan"))
first = g("tierload.first", "slow") + g("tierload.first", "fast")
second = g("tierload.second.1", "slow") + g("tierload.second.1", "fast")
figure("tierload: second run bytes over the links / first run's", f"{second / first:.4f}",
       "<= 0.01", second <= 0.01 * first)
def med(e, kind):
    v = sorted(r["wall"] for n, r in runs.items() if n.startswith(f"{e}.{kind}."))
    return v[len(v) // 2] if v else float("nan")
def outside(e):
    d = med(e, "gen") - med(e, "second")
    return 64 / d if d > 0 else float("nan")
def tps(e):
    v = sorted(r["decode"] for n, r in runs.items() if n.startswith(f"{e}.gen."))
    d = v[len(v) // 2] if v else float("nan")
    return 65 / d if d > 0 else float("nan")
tl, lc = tps("tierload"), tps("llamacpp")
print(f"  tokens/s from outside (64 / (median wall 65 tokens - median wall 1 token)): tierload "
      f"{outside('tierload'):.2f}, llama.cpp {outside('llamacpp'):.2f}")
print(f"  tokens/s (65 / median decode time of the 65-token runs, each engine's own clock): "
      f"tierload {tl:.2f}, llama.cpp {lc:.2f}")
figure("tokens/s tierload / llama.cpp", f"{tl / lc:.3f}", ">= 1", tl >= lc)
a, b = g("tierload.first", "wall"), g("llamacpp.first", "wall")
figure("time to first token, first run, tierload / llama.cpp", f"{a / b:.3f}", "<= 1", a <= b)
k, u = runs.get("tierload.killed", {}), runs.get("tierload.gen.1", {})
same = k.get("ok") and k.get("greedy") == u.get("greedy")
figure("fast host killed after the first token: tokens = uninterrupted", "same" if same else
       "differ", "same", bool(same))
sys.exit(1 if miss else 0)
PY
