#!/bin/sh
# bench_merge.sh BUILD_DIR — `tierload merge` of the demo model (1.42 GiB SD 1.x, F16) with its
# LoRA (144 modules) against `cp` of the same model file, page cache warm: ROUNDS (5) alternating
# rounds of each, output removed and `sync` run before each timed command (outside the timer), so
# that neither starts behind the other's dirty pages. Prints the medians, their ratio beside its
# limit (merge <= 1.3 x cp) and the merge's peak extra anonymous RSS (its --json
# rss_anon_extra_peak, the largest of the rounds) beside its limit (64 MiB); exits 1 on a miss.
# The merge syncs its output before renaming it into place (tierload's outfile); cp does not: that
# sync is inside the merge's time. So each round also times `cp` followed by `sync FILE` (an
# fsync of the copy), printed beside the merge for information (no limit).
# The demo files come from TL_BENCH_DEMO_DIR, else the demo's own cache ($XDG_CACHE_HOME/tierload
# or ~/.cache/tierload); they are generated there once (`tierload demo`) when missing. Outputs go
# to a temporary folder in TMPDIR.
set -u
BUILD=${1:-build}
NAME=bench_merge
. "$(dirname "$0")/demo_files.sh"
/usr/bin/python3 - "$CLI" "$M" "$L" "$T" "${TL_BENCH_ROUNDS:-5}" <<'PY'
import json, os, statistics, subprocess, sys, time
cli, model, lora, tmp, rounds = sys.argv[1:6]
rounds = int(rounds)
out = os.path.join(tmp, "merged.safetensors")
cpy = os.path.join(tmp, "copy.safetensors")
with open(model, "rb") as f:  # page cache warm
    while f.read(1 << 24):
        pass
def timed(cmd, dst):
    if os.path.exists(dst):
        os.unlink(dst)
    subprocess.run(["sync"], check=True)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, check=True)
    return time.perf_counter() - t0, p.stdout
merge_t, cp_t, cps_t, extra = [], [], [], 0
for _ in range(rounds):
    t, so = timed([cli, "merge", model, "--lora", lora, "-o", out, "--json"], out)
    merge_t.append(t)
    extra = max(extra, json.loads(so)["rss_anon_extra_peak"])
    t, _ = timed(["cp", model, cpy], cpy)
    cp_t.append(t)
    t, _ = timed(["sh", "-c", 'cp "$1" "$2" && sync "$2"', "sh", model, cpy], cpy)
    cps_t.append(t)
mm, mc, ms = statistics.median(merge_t), statistics.median(cp_t), statistics.median(cps_t)
size = os.path.getsize(model)
ratio = mm / mc
mib = extra / 2**20
ok_t, ok_m = ratio <= 1.3, mib <= 64
print(f"model {size / 2**30:.2f} GiB, {rounds} alternating rounds, medians; CPUs {len(os.sched_getaffinity(0))}")
print(f"merge {mm:.3f} s (rounds {' '.join(f'{x:.2f}' for x in merge_t)}), "
      f"cp {mc:.3f} s (rounds {' '.join(f'{x:.2f}' for x in cp_t)})")
print(f"cp + fsync {ms:.3f} s (rounds {' '.join(f'{x:.2f}' for x in cps_t)}); "
      f"merge / (cp + fsync): {mm / ms:.2f} (no limit)")
print(f"merge / cp: {ratio:.2f}  (limit 1.30) {'ok' if ok_t else 'MISSED'}")
print(f"merge peak extra RSS anon: {mib:.1f} MiB  (limit 64 MiB) {'ok' if ok_m else 'MISSED'}")
sys.exit(0 if ok_t and ok_m else 1)
PY
