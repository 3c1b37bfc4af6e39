#!/usr/bin/python3
"""pipeline.py — a small SD-like torch pipeline whose weights tierload keeps.

A text encoder (embedding + pre-norm MLP blocks), a denoiser of N blocks run for K steps and a
decoder, torch nn.Modules whose weights are stored in one safetensors file written here (names
as stable-diffusion.cpp checkpoints have them: cond_stage_model., model.diffusion_model.,
first_stage_model.). The pipeline runs twice, each in its own process so that memory peaks are
its own:
  plain     every weight read by torch from the file into tensors it owns and copied into the
            modules by load_state_dict (the usual way);
  tierload  the same modules, built on the meta device, kept for the whole run: a session over
            the model with a host budget smaller than the model acquires each component for its
            phase only and tierload.fill_module puts the acquired zero-copy tensors into the
            module's parameters (by name, with a name map where the module's names differ);
            tierload.free_memory is asked for room before each phase (where the library has
            it); the denoiser's blocks are acquired one at a time with the next one prefetched,
            every step.
The outputs are compared bit for bit and both memory profiles are printed.

usage: pipeline.py [--small] [--dir DIR] [--dim D] [--blocks N] [--steps K]
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bindings", "python"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

MiB = 1 << 20
VOCAB, TOKENS, LATENT = 512, 16, 64


def shapes(d, n_blocks, n_cond=4):
    """Every weight of the pipeline: name -> shape (F32)."""
    s = {"cond_stage_model.embed.weight": (VOCAB, d)}
    for i in range(n_cond):
        p = "cond_stage_model.blocks.%d." % i
        s.update({p + "norm.weight": (d,), p + "norm.bias": (d,), p + "fc1.weight": (2 * d, d),
                  p + "fc1.bias": (2 * d,), p + "fc2.weight": (d, 2 * d), p + "fc2.bias": (d,)})
    s["model.diffusion_model.time_embed.weight"] = (64, d)
    for i in range(n_blocks):
        p = "model.diffusion_model.blocks.%d." % i
        s.update({p + "norm.weight": (d,), p + "norm.bias": (d,), p + "attn.weight": (d, d),
                  p + "ctx.weight": (d, d), p + "mlp.weight": (d, d)})
    s["first_stage_model.decoder.conv_in.weight"] = (d, d)
    s["first_stage_model.decoder.conv_out.weight"] = (48, d)
    return s


def write_model(path, d, n_blocks):
    """A safetensors file of random weights, every tensor 64-byte aligned (as torch allocates)."""
    g = torch.Generator().manual_seed(1234)
    sh = shapes(d, n_blocks)
    header, off = {}, 0
    for name, shape in sh.items():
        n = 4
        for x in shape:
            n *= x
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(header).encode()
    h += b" " * ((-(8 + len(h))) % 64)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for name, shape in sh.items():
            fan = shape[-1]
            t = torch.randn(shape, generator=g) / (fan ** 0.5 if len(shape) > 1 else 4.0)
            if name.endswith("norm.weight"):
                t += 1.0
            f.write(t.numpy().tobytes())
    os.replace(tmp, path)
    return off


def read_plain(path):
    """Every tensor of a safetensors file read into torch-owned memory (no tierload)."""
    out = {}
    with open(path, "rb") as f:
        (hlen,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(hlen))
        base = 8 + hlen
        for name, e in header.items():
            if name == "__metadata__":
                continue
            t = torch.empty(e["shape"], dtype=torch.float32)
            f.seek(base + e["data_offsets"][0])
            f.readinto(memoryview(t.numpy()).cast("B"))
            out[name] = t
    return out


# --- the pipeline: torch nn.Modules, as a ComfyUI-style program keeps them ---

class CondBlock(torch.nn.Module):
    def __init__(self, d, device=None):
        super().__init__()
        self.norm = torch.nn.LayerNorm(d, device=device)
        self.fc1 = torch.nn.Linear(d, 2 * d, device=device)
        self.fc2 = torch.nn.Linear(2 * d, d, device=device)

    def forward(self, x):
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


class TextEncoder(torch.nn.Module):
    """The module's own names ("token_embedding") differ from the file's ("embed"): a name map
    says which is which."""
    NAME_MAP = {"token_embedding.weight": "embed.weight"}

    def __init__(self, d, n_cond=4, device=None):
        super().__init__()
        self.token_embedding = torch.nn.Embedding(VOCAB, d, device=device)
        self.blocks = torch.nn.ModuleList(CondBlock(d, device) for _ in range(n_cond))

    def forward(self, tokens):
        x = self.token_embedding(tokens)
        for b in self.blocks:
            x = b(x)
        return x.mean(0)


class DenoiseBlock(torch.nn.Module):
    def __init__(self, d, device=None):
        super().__init__()
        self.norm = torch.nn.LayerNorm(d, device=device)
        self.attn = torch.nn.Linear(d, d, bias=False, device=device)
        self.ctx = torch.nn.Linear(d, d, bias=False, device=device)
        self.mlp = torch.nn.Linear(d, d, bias=False, device=device)

    def forward(self, x, ctx, temb):
        h = self.norm(x + temb)
        return x + 0.1 * self.mlp(torch.tanh(self.attn(h) + self.ctx(ctx)))


class Denoiser(torch.nn.Module):
    def __init__(self, d, n_blocks, device=None):
        super().__init__()
        self.time_embed = torch.nn.Embedding(64, d, device=device)
        self.blocks = torch.nn.ModuleList(DenoiseBlock(d, device) for _ in range(n_blocks))


class Decoder(torch.nn.Module):
    def __init__(self, d, device=None):
        super().__init__()
        self.conv_in = torch.nn.Linear(d, d, bias=False, device=device)
        self.conv_out = torch.nn.Linear(d, 48, bias=False, device=device)

    def forward(self, x):
        return self.conv_out(F.gelu(self.conv_in(x)))


def modules(d, n_blocks, device=None):
    return TextEncoder(d, device=device), Denoiser(d, n_blocks, device), Decoder(d, device)


def inputs(d):
    g = torch.Generator().manual_seed(99)
    return torch.randint(0, VOCAB, (TOKENS,), generator=g), torch.randn(LATENT, d, generator=g)


def sub(weights, prefix):
    return {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}


def run_plain(path, d, n_blocks, steps):
    """The usual way: modules built, then load_state_dict copies the weights read from the file."""
    weights = read_plain(path)
    enc, den, dec = modules(d, n_blocks)
    to_module = {f: n for n, f in TextEncoder.NAME_MAP.items()}  # file name -> module name
    enc.load_state_dict({to_module.get(k, k): v
                         for k, v in sub(weights, "cond_stage_model.").items()})
    den.load_state_dict(sub(weights, "model.diffusion_model."))
    dec.load_state_dict(sub(weights, "first_stage_model.decoder."))
    tokens, x = inputs(d)
    with torch.no_grad():
        ctx = enc(tokens)
        for k in range(steps):
            temb = den.time_embed.weight[k]
            for blk in den.blocks:
                x = blk(x, ctx, temb)
        return dec(x), None


def run_tierload(path, d, n_blocks, steps, host_budget):
    """The same modules (built on the meta device: no memory of their own), their parameters
    filled with zero-copy tensors of what the session acquired, phase by phase and block by
    block; released weights are refused if touched again (UseAfterRelease)."""
    import tierload
    m = tierload.open(path)
    plan = tierload.plan(m, devices="cpu=0", phases="cond,diffusion,vae", steps=steps)
    s = tierload.Session(m, plan, host_budget=host_budget)
    enc, den, dec = modules(d, n_blocks, device="meta")
    tokens, x = inputs(d)
    notes = []

    def make_room(nbytes):
        # what a ComfyUI server asks before a phase: free memory on the device it computes on
        try:
            tierload.free_memory(nbytes, "cpu")
        except tierload.Error as e:
            if not notes:
                notes.append(e.message)
        m.advise("dontneed")  # the mapping's pages of the last phase leave this process

    with torch.no_grad():
        with s.acquire("cond") as cw:  # phase 1: the text encoder, then dropped
            tierload.fill_module(enc, cw, name_map=TextEncoder.NAME_MAP, prefix="cond_stage_model.")
            ctx = enc(tokens)
        make_room(plan_bytes(m, "diffusion"))
        for k in range(steps):  # phase 2: the denoiser, block by block
            with s.acquire("diffusion", layers=(0, 0), with_other=True) as ow:
                temb = ow["model.diffusion_model.time_embed.weight"][k].clone()
            for i, blk in enumerate(den.blocks):
                if i + 1 < n_blocks:
                    s.prefetch("diffusion", layers=i + 1, with_other=False)
                with s.acquire("diffusion", layers=i) as bw:
                    tierload.fill_module(blk, bw, prefix="model.diffusion_model.blocks.%d." % i)
                    x = blk(x, ctx, temb)
                m.advise("dontneed")  # the block's pages leave this process
        make_room(plan_bytes(m, "vae"))
        with s.acquire("vae") as vw:  # phase 3: the decoder
            tierload.fill_module(dec, vw, prefix="first_stage_model.decoder.")
            out = dec(x)
    st = s.stats()
    s.check()
    return out, {"session": {k: st[k] for k in ("loads", "prefetch_hits", "host_peak",
                                                "host_budget", "bytes_moved")},
                 "free_memory": notes[0] if notes else "ok"}


def plan_bytes(m, component):
    return sum(t.nbytes for t in m.tensors if t.component == component)


class Sampler:
    """Peaks of RssAnon and RssFile, sampled by a thread every millisecond."""

    def __init__(self):
        self.peak = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
        self.stop = False
        self.sample()
        self.start = dict(self.now)
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    def sample(self):
        now = {}
        with open("/proc/self/status") as f:
            for line in f:
                k = line.split(":")[0]
                if k in self.peak:
                    now[k] = int(line.split()[1]) * 1024
                    self.peak[k] = max(self.peak[k], now[k])
        self.now = now

    def loop(self):
        while not self.stop:
            self.sample()
            time.sleep(0.001)

    def done(self):
        self.stop = True
        self.t.join()
        self.sample()
        return {"start": self.start, "end": self.now, "peak": self.peak}


def child(args):
    torch.set_num_threads(2)
    torch.manual_seed(0)
    sampler = Sampler()
    t0 = time.time()
    if args.run == "plain":
        out, extra = run_plain(args.model, args.dim, args.blocks, args.steps)
    else:
        out, extra = run_tierload(args.model, args.dim, args.blocks, args.steps, args.host_budget)
    secs = time.time() - t0
    prof = sampler.done()
    with open(args.out, "wb") as f:
        f.write(out.contiguous().numpy().tobytes())
    print(json.dumps({"mem": prof, "seconds": secs, "extra": extra}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="a tiny model (what the test runs)")
    ap.add_argument("--dir", help="folder for the model and outputs (default: a temporary one)")
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--blocks", type=int, default=16)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--run", choices=["plain", "tierload"], help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--host-budget", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        return child(args)
    if args.small:
        args.dim, args.blocks, args.steps = 128, 4, 3
    if args.dim % 16:
        ap.error("--dim must be a multiple of 16 (64-byte aligned tensors)")
    d = tempfile.mkdtemp(prefix="pipeline-", dir=args.dir)
    model = os.path.join(d, "sdlike.safetensors")
    size = write_model(model, args.dim, args.blocks)
    budget = size // 2
    print("model: %s, %.1f MiB (dim %d, %d denoiser blocks, %d steps); session host budget "
          "%.1f MiB" % (model, size / MiB, args.dim, args.blocks, args.steps, budget / MiB))
    res = {}
    for run in ("plain", "tierload"):
        out = os.path.join(d, run + ".out")
        r = subprocess.run([sys.executable, os.path.abspath(__file__), "--run", run, "--model",
                            model, "--out", out, "--dim", str(args.dim), "--blocks",
                            str(args.blocks), "--steps", str(args.steps), "--host-budget",
                            str(budget)], capture_output=True, text=True)
        if r.returncode != 0:
            sys.stderr.write(r.stderr)
            print("%s run failed (exit %d)" % (run, r.returncode))
            return 1
        res[run] = json.loads(r.stdout.strip().splitlines()[-1])
        with open(out, "rb") as f:
            res[run]["bytes"] = f.read()
    equal = res["plain"]["bytes"] == res["tierload"]["bytes"]
    print("%-9s %8s %14s %14s %14s %14s %10s" % ("run", "seconds", "anon start", "anon peak",
                                                 "file peak", "rss peak", "anon end"))
    for run in ("plain", "tierload"):
        m = res[run]["mem"]
        print("%-9s %8.2f %10.1f MiB %10.1f MiB %10.1f MiB %10.1f MiB %6.1f MiB" % (
            run, res[run]["seconds"], m["start"]["RssAnon"] / MiB, m["peak"]["RssAnon"] / MiB,
            m["peak"]["RssFile"] / MiB, m["peak"]["VmRSS"] / MiB, m["end"]["RssAnon"] / MiB))
    print("session: %s" % json.dumps(res["tierload"]["extra"]["session"]))
    print("free_memory: %s" % res["tierload"]["extra"]["free_memory"])
    print("outputs bit-equal: %s (%d bytes)" % ("yes" if equal else "NO",
                                                 len(res["plain"]["bytes"])))
    if not args.dir:
        import shutil
        shutil.rmtree(d, ignore_errors=True)
    else:
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
        os.rmdir(d)
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
