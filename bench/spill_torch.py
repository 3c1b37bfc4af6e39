#!/usr/bin/python3
"""spill_torch.py — moving a big torch tensor out of RAM: the usual way against tierload.spill.

Rows (each in its own process, so peaks are its own):
  save    host = t.cpu(); torch.save(host, f); t2 = torch.from_file(f) sliced at the storage's
          bytes (the mapping back); on a machine without a GPU t.cpu() is a clone, the copy a
          GPU tensor's cpu() makes
  spill   t2 = tierload.spill(t): written in 16 MiB chunks into an unnamed file, mapped back
Each prints the time of the move and VmRSS at start (tensor made), end (original dropped, the
moved tensor alive) and peak (VmHWM, reset at start), and checks the moved tensor's bytes.

usage: bench/spill_torch.py [--gib 4] [--dir DIR]   (TIERLOAD_LIBRARY: the libtierload.so)
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "bindings", "python"))
MiB = 1 << 20


def kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def storage_offset_in_zip(path):
    """Absolute offset of the first tensor storage's bytes in a torch.save zip file."""
    with zipfile.ZipFile(path) as z:
        info = [i for i in z.infolist() if "/data/" in i.filename][0]
        assert info.compress_type == zipfile.ZIP_STORED
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        h = f.read(30)
        name_len, extra_len = struct.unpack("<HH", h[26:30])
    return info.header_offset + 30 + name_len + extra_len


def child(kind, gib, d):
    import torch
    n = gib * (1 << 30) // 4
    t = torch.empty(n, dtype=torch.float32)
    t.fill_(1.5)
    t[:: 1 << 20] = torch.arange(t[:: 1 << 20].numel(), dtype=torch.float32)  # not constant
    probe = t[:: 1 << 20].clone()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    start = kb("VmRSS")
    t0 = time.time()
    if kind == "save":
        path = os.path.join(d, "offload.pt")
        host = t.cpu() if t.device.type != "cpu" else t.clone()
        torch.save(host, path)
        del host
        off = storage_offset_in_zip(path)
        size = os.path.getsize(path)
        whole = torch.from_file(path, shared=False, size=size, dtype=torch.uint8)
        moved = whole[off:off + n * 4].view(torch.float32)
    else:
        import tierload
        moved = tierload.spill(t, dir=d)
    secs = time.time() - t0
    del t
    end = kb("VmRSS")
    peak = kb("VmHWM")
    ok = torch.equal(moved[:: 1 << 20], probe)
    files = sorted(os.listdir(d))
    print(json.dumps({"seconds": secs, "start": start, "end": end, "peak": peak, "ok": ok,
                      "files_left": files}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=int, default=4)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--child", choices=["save", "spill"])
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.gib, args.dir)
    print("tensor: %d GiB float32; RSS in MiB" % args.gib)
    print("%-6s %8s %10s %10s %10s %12s  %s" % ("row", "seconds", "start", "end", "peak",
                                                "peak-start", "files left while alive"))
    for kind in ("save", "spill"):
        d = tempfile.mkdtemp(prefix="spillbench-", dir=args.dir)
        r = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", kind, "--gib",
                            str(args.gib), "--dir", d], capture_output=True, text=True)
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
        os.rmdir(d)
        if r.returncode != 0:
            sys.stderr.write(r.stderr)
            return 1
        x = json.loads(r.stdout.strip().splitlines()[-1])
        print("%-6s %8.2f %10.0f %10.0f %10.0f %12.0f  %s%s" % (
            kind, x["seconds"], x["start"] / MiB, x["end"] / MiB, x["peak"] / MiB,
            (x["peak"] - x["start"]) / MiB, x["files_left"] or "none",
            "" if x["ok"] else "  BYTES DIFFER"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
