#!/usr/bin/python3
"""peer_llamacpp_load.py BUILD MODEL ROUNDS — tl_llama_model_load against llama.cpp's own load.

Run by peer_llamacpp_load.sh (which says what it needs). Every measurement is a fresh
`tl-llamacpp` process (the example program on libtierload-llama, --reference for llama.cpp's
own loader) that reports the time from the load call to a usable llama_model, the time to the
first token, its peak RSS when the model became usable (the load's peak, which the limit is
on) and its peak RSS at exit (beside it: it adds llama.cpp's context and compute buffers). Conditions: warm (the file in the page cache) and cold (evicted),
each right after another process recycled memory and after 8 s idle; the variants alternate
within each round. Limits (medians per condition): tierload <= 0.6 x llama.cpp --no-mmap,
<= 1.0 x llama.cpp direct I/O where the file system takes O_DIRECT, peak RSS <= llama.cpp
--no-mmap's. Beside them, without a limit, the path tierload takes with no tierload in it:
llama.cpp's llama_model_init_from_user with a callback that preads each tensor (tl-llamacpp
--reference --llama-mode user), the least a program on that path does; tierload's peak RSS is
printed against it too. Before timing, the model's logits through both loaders must be
bit-identical.
Then, where a ggml-rpc-server is found (TL_GGML_RPC_SERVER, else BUILD/ggml/bin), two servers
become llama.cpp's devices with budgets (PEER_RPC_BUDGET, default 55% of the model each) that
neither meets alone: tierload's plan (--plan) must give the same logits as llama.cpp's own
placement on the same servers; tokens per second of both are printed side by side.
Exit 0 when every limit is met, 1 on a miss.
"""
import json
import mmap
import os
import statistics
import subprocess
import sys
import time

import numpy as np

BUILD, MODEL, ROUNDS = sys.argv[1], sys.argv[2], int(sys.argv[3])
EXE = os.path.join(BUILD, "tl-llamacpp")
TIERLOAD = os.path.join(BUILD, "tierload")


def finite_weights(path):
    """Overwrite mkmodel's weights with finite ones: F16 ~ normal(0, 1/sqrt(fan_in)), norms 1."""
    info = json.loads(subprocess.run([TIERLOAD, "info", "--json", path], check=True,
                                     capture_output=True, text=True).stdout)
    rng = np.random.default_rng(1234)
    with open(path, "r+b") as f:
        mm = mmap.mmap(f.fileno(), 0)
        for t in info["tensors"]:
            n = t["nbytes"]
            if t["dtype"] == "F32":
                mm[t["offset"]:t["offset"] + n] = np.ones(n // 4, np.float32).tobytes()
            elif t["dtype"] == "F16":
                fan_in = t["shape"][-1]
                view = np.frombuffer(mm, np.float16, n // 2, t["offset"])
                step = 1 << 24
                for a in range(0, view.size, step):
                    k = min(step, view.size - a)
                    x = rng.standard_normal(k, dtype=np.float32) / np.float32(np.sqrt(fan_in))
                    mm[t["offset"] + 2 * a:t["offset"] + 2 * (a + k)] = x.astype(np.float16).tobytes()
                del view
        mm.flush()
        mm.close()


def evict(path):
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)


def warm(path):
    with open(path, "rb") as f:
        while f.read(16 << 20):
            pass


def direct_io_supported(path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    except OSError:
        return False
    try:
        buf = mmap.mmap(-1, 1 << 20)
        os.preadv(fd, [buf], 0)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def recycle():
    """Another process takes and frees about the model's size of memory."""
    size = os.path.getsize(MODEL)
    code = ("import mmap\nm=mmap.mmap(-1,%d)\nfor i in range(0,%d,4096): m[i]=1\n" % (size, size))
    subprocess.run([sys.executable, "-c", code], check=True)


def run(variant, extra=()):
    cmd = [EXE, MODEL, "--json", "--tokens", "1", "--n-predict", "1"] + list(extra)
    if variant == "llama.cpp no-mmap":
        cmd += ["--reference", "--llama-mode", "none"]
    elif variant == "llama.cpp direct":
        cmd += ["--reference", "--llama-mode", "direct"]
    elif variant == "llama.cpp user API":
        cmd += ["--reference", "--llama-mode", "user"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        sys.exit("peer_llamacpp_load: %s failed: %s" % (" ".join(cmd), r.stderr.strip()))
    return json.loads(r.stdout)


def same_logits():
    out = {}
    for v in ("tierload", "llama.cpp no-mmap"):
        f = os.path.join(os.path.dirname(MODEL), "peer_logits_%d.f32" % len(out))
        j = run(v, ["--tokens", "1,17,42,99,200,7,3,250", "--n-predict", "4", "--logits", f])
        out[v] = (open(f, "rb").read(), j["generated"])
        os.unlink(f)
    a, b = out["tierload"], out["llama.cpp no-mmap"]
    x = np.frombuffer(a[0], np.float32)
    if not np.isfinite(x).all():
        sys.exit("peer_llamacpp_load: the model's logits are not finite")
    same = a[0] == b[0] and a[1] == b[1]
    print("logits (%d floats, 8 prompt tokens + 4 greedy): %s; greedy tokens %s vs %s"
          % (x.size, "bit-identical" if same else "DIFFERENT", a[1], b[1]))
    return same


def placement():
    exe = os.environ.get("TL_GGML_RPC_SERVER") or os.path.join(BUILD, "ggml", "bin", "ggml-rpc-server")
    if not os.access(exe, os.X_OK):
        print("placement over RPC: NOT CHECKED (no ggml-rpc-server; make ggml builds it)")
        return True
    port = 30000 + os.getpid() % 20000
    servers = [subprocess.Popen([exe, "-p", str(port + i), "-t", "1"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL) for i in range(2)]
    try:
        time.sleep(2)
        rpc = "127.0.0.1:%d,127.0.0.1:%d" % (port, port + 1)
        budget = os.environ.get("PEER_RPC_BUDGET", "%dM" % (os.path.getsize(MODEL) * 0.55 / (1 << 20)))
        out = {}
        for name, extra in (("tierload plan", ["--plan", "--max-vram", budget]),
                            ("llama.cpp own placement", ["--reference"])):
            f = os.path.join(os.path.dirname(MODEL), "peer_rpc_%d.f32" % len(out))
            j = run("tierload" if name.startswith("tierload") else "llama.cpp no-mmap",
                    ["--rpc", rpc, "--tokens", "1,17,42,99", "--n-predict", "16", "--logits", f] + extra)
            out[name] = (open(f, "rb").read(), j)
            os.unlink(f)
        same = out["tierload plan"][0] == out["llama.cpp own placement"][0]
        print("\nplacement over two RPC servers (budget %s each): logits %s" % (
            budget, "bit-identical" if same else "DIFFERENT"))
        for name, (_, j) in out.items():
            print("  %-24s load %.3f s  %.2f tokens/s" % (name, j["load_seconds"], j["tokens_per_second"]))
        return same
    finally:
        for p in servers:
            p.terminate()
            p.wait()


def main():
    if os.path.getsize(MODEL) < (1 << 30):
        sys.exit("peer_llamacpp_load: the model must be at least 1 GiB")
    direct = direct_io_supported(MODEL)
    variants = (["llama.cpp no-mmap", "tierload", "llama.cpp user API"] +
                (["llama.cpp direct"] if direct else []))
    ok = same_logits()
    conds = [("recycled", "warm"), ("recycled", "cold"), ("idle", "warm"), ("idle", "cold")]
    res = {c: {v: [] for v in variants} for c in conds}
    for r in range(ROUNDS):
        for c in conds:
            order = variants[r % len(variants):] + variants[:r % len(variants)]
            for v in order:
                if c[1] == "warm":
                    warm(MODEL)
                else:
                    evict(MODEL)
                if c[0] == "recycled":
                    recycle()
                else:
                    time.sleep(8)
                res[c][v].append(run(v))
    print("\nmedians of %d alternating rounds, each load a fresh process (%s)" % (ROUNDS, MODEL))
    print("%-16s %-18s %9s %9s %9s %9s %12s" % ("condition", "loader", "load s", "1st tok s",
                                                  "load MiB", "peak MiB", "range s"))
    for c in conds:
        med = {}
        for v in variants:
            ls = [j["load_seconds"] for j in res[c][v]]
            med[v] = (statistics.median(ls),
                      statistics.median(j["first_token_seconds"] for j in res[c][v]),
                      statistics.median(j["load_peak_rss_kib"] for j in res[c][v]) / 1024,
                      statistics.median(j["peak_rss_kib"] for j in res[c][v]) / 1024)
            print("%-16s %-18s %9.3f %9.3f %9.1f %9.1f %5.3f-%5.3f" % (
                "%s, %s" % c, v, med[v][0], med[v][1], med[v][2], med[v][3], min(ls), max(ls)))
        t, n = med["tierload"], med["llama.cpp no-mmap"]
        checks = [("load vs llama.cpp --no-mmap", t[0] / n[0], 0.6),
                  ("load's peak RSS vs llama.cpp --no-mmap", t[2] / n[2], 1.0)]
        if direct:
            checks.append(("load vs llama.cpp direct I/O", t[0] / med["llama.cpp direct"][0], 1.0))
        for name, ratio, limit in checks:
            good = ratio <= limit
            ok &= good
            print("%-16s   %-40s %.4fx  limit %.1fx  %s" % ("", name, ratio, limit,
                                                             "ok" if good else "MISSED"))
        u = med["llama.cpp user API"]
        print("%-16s   %-40s %.4fx  (%+.0f KiB; the user API path itself: %+.0f KiB)" % (
            "", "load's peak RSS vs llama.cpp user API", t[2] / u[2], (t[2] - u[2]) * 1024,
            (u[2] - n[2]) * 1024))
    if not direct:
        print("direct I/O: this file system refuses O_DIRECT; that limit is not checked")
    ok &= placement()
    print("\npeer_llamacpp_load: %s" % ("every limit met" if ok else "a limit was missed"))
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) > 4 and sys.argv[4] == "--prepare":
        finite_weights(MODEL)
        sys.exit(0)
    sys.exit(main())
