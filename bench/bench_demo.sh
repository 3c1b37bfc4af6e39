#!/bin/sh
# bench_demo.sh BUILD_DIR — the demo's streaming rate against memory speed: `tierload demo --json`
# (the 1.42 GiB SD 1.x demo model and its LoRA, `cond,diffusion*8,vae` through a 640 MiB sim GPU,
# every acquired byte hashed by the run's check) and, in the same run, a 2-thread memcpy of the
# demo model's bytes from its mapping (populated first) into a 256 MiB buffer (faulted in first),
# as bench_session's stream case times it (median of 3). Figure: the bytes the diffusion passes
# after the first move onto the sim GPU, over their wall time (the phases' `seconds`), against
# that memcpy's rate: >= 0.7 (limit). Also printed: the first pass's rate. ROUNDS (3) demo runs,
# the median taken. Exits 1 on a miss, 2 when the demo fails.
# The demo files: bench/demo_files.sh.
set -u
BUILD=${1:-build}
NAME=bench_demo
. "$(dirname "$0")/demo_files.sh"
for r in $(seq "${TL_BENCH_ROUNDS:-3}"); do
    "$CLI" demo --cache-dir "$D" --json >"$T/demo$r.json" 2>"$T/demo$r.err" ||
        { echo "bench_demo: the demo failed: $(head -c 400 "$T/demo$r.err")"; exit 2; }
done
/usr/bin/python3 - "$M" "$T" "${TL_BENCH_ROUNDS:-3}" <<'PY'
import ctypes, json, mmap, os, statistics, sys, threading, time
import numpy as np
model, tmp, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
later, first, moved = [], [], []
for r in range(1, rounds + 1):
    j = json.load(open(os.path.join(tmp, f"demo{r}.json")))
    d = [p for p in j["phases"] if p["name"] == "diffusion"]
    if len(d) < 2 or j["totals"]["hash_mismatches"]:
        print("bench_demo: fewer than two diffusion passes, or hash mismatches")
        sys.exit(2)
    first.append(d[0]["bytes_to_devices"] / d[0]["seconds"])
    moved.append(sum(p["bytes_to_devices"] for p in d[1:]))
    later.append(moved[-1] / sum(p["seconds"] for p in d[1:]))
# the reference: 2 threads copying halves of as many bytes from the populated mapping into a
# 256 MiB buffer faulted in first (libc's memcpy through ctypes, which lets go of the GIL)
n = int(statistics.median(moved))
fd = os.open(model, os.O_RDONLY)
size = os.fstat(fd).st_size
src = mmap.mmap(fd, size, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE, prot=mmap.PROT_READ)
os.close(fd)
dlen = 256 << 20
dst = np.ones(dlen, dtype=np.uint8)
sptr, dptr = np.frombuffer(src, dtype=np.uint8).ctypes.data, dst.ctypes.data
libc = ctypes.CDLL(None)
libc.memcpy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
PIECE = 4 << 20
def share(start, total):
    done = 0
    while done < total:
        at = (start + done) % size
        k = min(PIECE, total - done, size - at)
        libc.memcpy(dptr + (start + done) % (dlen - PIECE), sptr + at, k)
        done += k
tries = []
for _ in range(3):
    t0 = time.perf_counter()
    th = threading.Thread(target=share, args=(n // 2, n - n // 2))
    th.start()
    share(0, n // 2)
    th.join()
    tries.append(time.perf_counter() - t0)
rate = n / statistics.median(tries)
lat, fir = statistics.median(later), statistics.median(first)
ok = lat >= 0.7 * rate
print(f"demo ({rounds} runs, medians): the diffusion passes after the first move {n / 2**30:.2f} GiB; "
      f"a 2-thread memcpy of as many bytes from the mapping runs at {rate / 1e9:.1f} GB/s")
print(f"  passes after the first {lat / 1e9:.2f} GB/s: {lat / rate:.2f} x memcpy (limit >= 0.70) "
      f"{'ok' if ok else 'MISSED'}; the first pass {fir / 1e9:.2f} GB/s ({fir / rate:.2f} x)")
sys.exit(0 if ok else 1)
PY
