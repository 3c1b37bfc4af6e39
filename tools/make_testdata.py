#!/usr/bin/python3
"""make_testdata.py — the generated half of the test data (run by tools/make_testdata.sh).

  make_testdata.py models GGUF_PY VOCAB GGUF_DIR WORK_DIR
      writes, with llama.cpp's gguf-py writer (GGUF_PY on sys.path), small llama-architecture
      models that llama.cpp loads and evaluates: the tokenizer of VOCAB (llama.cpp's SPM vocab
      test file), the hyperparameters llama needs, and one deterministic set of weights (normal
      with standard deviation 1/sqrt(fan_in), norms 1) stored as F16, Q8_0 and Q4_0 (gguf-py's
      quantizer) in GGUF_DIR/tiny-llama-{f16,q8_0,q4_0}.gguf; and WORK_DIR/tiny-llama-256-f16.gguf,
      every row a multiple of 256 long, for llama-quantize's K-quants.

  make_testdata.py expected OUT_DIR [GGUF_PY]
      writes OUT_DIR/expected/<file>.json for every OUT_DIR/safetensors/*.safetensors (a strict
      header parser written here) and, given GGUF_PY, every OUT_DIR/gguf/*.gguf (gguf-py's
      GGUFReader): what an independent reader says about the file, in the schema of
      `tierload info --json`'s catalog (see tests/data/README.md).

Only the standard library and numpy; everything is deterministic (same bytes on every run).
"""
import json
import os
import struct
import sys

# ---------------------------------------------------------------- models (gguf-py writer)

SEED = 20240527  # one network, written in each precision


class Shape:
    def __init__(self, name, n_embd, n_ff, n_layer, n_head):
        self.name, self.n_embd, self.n_ff, self.n_layer, self.n_head = name, n_embd, n_ff, n_layer, n_head


def weights(np, shape, n_vocab):
    """Tensors in file order: (name, float32 array in numpy order [rows, row length])."""
    rng = np.random.default_rng(SEED)
    e, f = shape.n_embd, shape.n_ff

    def mat(rows, cols):  # a row holds one output's inputs: fan_in = cols
        return (rng.standard_normal((rows, cols), dtype=np.float32) / np.float32(np.sqrt(cols))).astype(np.float32)

    def norm(n):
        return np.ones(n, dtype=np.float32)

    out = [("token_embd.weight", mat(n_vocab, e)), ("output_norm.weight", norm(e)),
           ("output.weight", mat(n_vocab, e))]
    for b in range(shape.n_layer):
        p = "blk.%d." % b
        out += [(p + "attn_norm.weight", norm(e)), (p + "attn_q.weight", mat(e, e)),
                (p + "attn_k.weight", mat(e, e)), (p + "attn_v.weight", mat(e, e)),
                (p + "attn_output.weight", mat(e, e)), (p + "ffn_norm.weight", norm(e)),
                (p + "ffn_gate.weight", mat(f, e)), (p + "ffn_up.weight", mat(f, e)),
                (p + "ffn_down.weight", mat(e, f))]
    return out


def write_llama(gguf, np, path, shape, qtype, vocab):
    """One llama GGUF: hyperparameters, VOCAB's tokenizer, weights as qtype (1-D tensors F32)."""
    T = gguf.GGMLQuantizationType
    ftype = {T.F16: gguf.LlamaFileType.MOSTLY_F16, T.Q8_0: gguf.LlamaFileType.MOSTLY_Q8_0,
             T.Q4_0: gguf.LlamaFileType.MOSTLY_Q4_0}[qtype]
    tok = vocab.fields["tokenizer.ggml.tokens"]
    n_vocab = len(tok.data)
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("%s-%s" % (shape.name, qtype.name.lower()))
    w.add_context_length(2048)
    w.add_embedding_length(shape.n_embd)
    w.add_block_count(shape.n_layer)
    w.add_feed_forward_length(shape.n_ff)
    w.add_head_count(shape.n_head)
    w.add_head_count_kv(shape.n_head)
    w.add_rope_dimension_count(shape.n_embd // shape.n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(int(ftype))
    if qtype != T.F16:
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    # the tokenizer exactly as llama.cpp's vocab test file has it (SPM: tokens, scores, types, ids)
    for key, field in vocab.fields.items():
        if not key.startswith("tokenizer."):
            continue
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            w.add_key_value(key, field.contents(), field.types[0], sub_type=field.types[-1])
        else:
            w.add_key_value(key, field.contents(), field.types[0])
    for name, a in weights(np, shape, n_vocab):
        if a.ndim == 1:
            w.add_tensor(name, a)
        elif qtype == T.F16:
            w.add_tensor(name, a.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(a, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def cmd_models(gguf_py, vocab_path, gguf_dir, work_dir):
    sys.path.insert(0, gguf_py)
    import logging
    logging.disable(logging.WARNING)  # the writer logs each step at INFO
    import numpy as np
    import gguf
    vocab = gguf.GGUFReader(vocab_path)
    T = gguf.GGMLQuantizationType
    small = Shape("tiny-llama-64x2", n_embd=64, n_ff=128, n_layer=2, n_head=4)
    for qtype, suffix in ((T.F16, "f16"), (T.Q8_0, "q8_0"), (T.Q4_0, "q4_0")):
        write_llama(gguf, np, os.path.join(gguf_dir, "tiny-llama-%s.gguf" % suffix), small, qtype, vocab)
    wide = Shape("tiny-llama-256x2", n_embd=256, n_ff=512, n_layer=2, n_head=4)
    write_llama(gguf, np, os.path.join(work_dir, "tiny-llama-256-f16.gguf"), wide, T.F16, vocab)


# ---------------------------------------------------------------- expected JSON

def dump_expected(path, file_entry, tensors):
    """The layout of expected/*.json: one line per file and per tensor."""
    lines = ['{"files": [', "  " + json.dumps(file_entry), '], "tensors": [']
    lines.append(",\n".join("  " + json.dumps(t) for t in tensors))
    text = "\n".join(lines[:3]) + "\n" + (lines[3] + "\n" if tensors else "") + "]}\n"
    with open(path, "w") as f:
        f.write(text)


def gguf_expected(gguf, path):
    r = gguf.GGUFReader(path)
    version = r.fields["GGUF.version"].contents()
    align = r.fields.get("general.alignment")
    tensors = [{"name": t.name, "dtype": t.tensor_type.name,
                "shape": [int(d) for d in reversed(t.shape.tolist())],
                "file": 0, "offset": int(t.data_offset), "nbytes": int(t.n_bytes)} for t in r.tensors]
    entry = {"path": os.path.basename(path), "format": "gguf", "version": int(version),
             "size": os.path.getsize(path), "data_offset": int(r.data_offset),
             "alignment": int(align.contents()) if align else 32}
    return entry, tensors


# bits per element of every safetensors dtype (the format's own list)
ST_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "I16": 16,
           "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "F64": 64,
           "I64": 64, "U64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "C64": 64}


class BadFile(Exception):
    pass


def safetensors_expected(path):
    """Strict: every rule of the format, or BadFile naming the file and what is wrong."""
    def bad(msg):
        raise BadFile("%s: %s" % (path, msg))

    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        bad("shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", blob[:8])
    if n < 2 or n > 100 << 20 or 8 + n > len(blob):
        bad("header length %d does not fit the file (%d bytes)" % (n, len(blob)))
    raw = blob[8:8 + n]
    if raw[:1] != b"{":
        bad("header does not start with '{'")

    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            bad("duplicate key in the header")
        return dict(pairs)

    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, ValueError) as e:
        bad("header is not UTF-8 JSON: %s" % e)
    if not isinstance(header, dict):
        bad("header is not a JSON object")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        bad("__metadata__ is not an object of strings")
    buf = len(blob) - 8 - n
    spans = []
    for name, t in header.items():
        if not isinstance(t, dict) or set(t) != {"dtype", "shape", "data_offsets"}:
            bad("tensor %r: wants exactly dtype, shape, data_offsets" % name)
        dt, shape, offs = t["dtype"], t["shape"], t["data_offsets"]
        if dt not in ST_BITS:
            bad("tensor %r: unknown dtype %r" % (name, dt))
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            bad("tensor %r: shape is not a list of sizes" % name)
        if (not isinstance(offs, list) or len(offs) != 2 or
                not all(isinstance(o, int) and not isinstance(o, bool) for o in offs) or not 0 <= offs[0] <= offs[1]):
            bad("tensor %r: data_offsets is not [begin, end]" % name)
        elems = 1
        for d in shape:
            elems *= d
        if elems * ST_BITS[dt] % 8:
            bad("tensor %r: %d elements of %s are not whole bytes" % (name, elems, dt))
        if offs[1] - offs[0] != elems * ST_BITS[dt] // 8:
            bad("tensor %r: %d bytes for %d elements of %s" % (name, offs[1] - offs[0], elems, dt))
        spans.append((offs[0], offs[1], name, dt, shape))
    spans.sort()
    at = 0
    for b, e, name, _, _ in spans:
        if b != at:
            bad("tensor %r: data starts at %d, expected %d (gap or overlap)" % (name, b, at))
        at = e
    if at != buf:
        bad("tensor data ends at %d, the buffer holds %d bytes" % (at, buf))
    entry = {"path": os.path.basename(path), "format": "safetensors", "version": None,
             "size": len(blob), "data_offset": 8 + n, "alignment": None}
    tensors = [{"name": name, "dtype": dt, "shape": shape, "file": 0, "offset": 8 + n + b,
                "nbytes": e - b} for b, e, name, dt, shape in spans]
    return entry, tensors


def cmd_expected(out_dir, gguf_py=None):
    exp = os.path.join(out_dir, "expected")
    os.makedirs(exp, exist_ok=True)
    jobs = []
    st_dir = os.path.join(out_dir, "safetensors")
    for name in sorted(os.listdir(st_dir)):
        if name.endswith(".safetensors"):
            jobs.append((os.path.join(st_dir, name), safetensors_expected))
    if gguf_py:
        sys.path.insert(0, gguf_py)
        import gguf
        g_dir = os.path.join(out_dir, "gguf")
        for name in sorted(os.listdir(g_dir)):
            if name.endswith(".gguf"):
                jobs.append((os.path.join(g_dir, name), lambda p: gguf_expected(gguf, p)))
    for path, reader in jobs:
        entry, tensors = reader(path)
        dump_expected(os.path.join(exp, os.path.basename(path) + ".json"), entry, tensors)


def main(argv):
    try:
        if len(argv) == 6 and argv[1] == "models":
            cmd_models(*argv[2:])
        elif len(argv) in (3, 4) and argv[1] == "expected":
            cmd_expected(*argv[2:])
        else:
            sys.stderr.write(__doc__)
            return 2
    except BadFile as e:
        sys.stderr.write("make_testdata.py: %s\n" % e)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
