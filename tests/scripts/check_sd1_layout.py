#!/usr/bin/python3
# check_sd1_layout.py FILE [--small] — FILE (safetensors) against Stable Diffusion 1.x's tensor list,
# written here from the ldm model definitions (openaimodel UNetModel with SpatialTransformer, the
# CLIP ViT-L/14 text transformer, AutoencoderKL) as a table of blocks, not from tierload's code.
# The list itself is checked first: at SD 1.5's sizes its parameter counts are the published
# ones (UNet 859,520,964; CLIP ViT-L/14 text model 123,060,480; SD VAE 83,653,863) and its tensor
# counts those of SD 1.5's checkpoint (686, 196 without the position_ids buffer, 248).
# Then FILE: the same names and shapes (F16), every value finite, biases 0, norm weights 1, and
# the standard deviation of the larger weights within 3% of 1/sqrt(fan_in) (mean near 0).
# --small: the demo's small variant (text width 192, vocabulary 4096, UNet base 64, context 192,
# VAE base 32). Exit 0 when all hold, 1 with the differences, 77 when numpy is missing.
import json, math, struct, sys

try:
    import numpy as np
except ImportError:
    print('numpy is missing (apt-get install python3-numpy)')
    sys.exit(77)


def unet(b, ctx):
    """model.diffusion_model.* of an SD 1.x UNet with base channels b."""
    t = {}
    P = 'model.diffusion_model.'

    def lin(n, o, i, bias=True):
        t[P + n + '.weight'] = (o, i)
        if bias:
            t[P + n + '.bias'] = (o,)

    def cv(n, o, i, k):
        t[P + n + '.weight'] = (o, i, k, k)
        t[P + n + '.bias'] = (o,)

    def gn(n, c):
        t[P + n + '.weight'] = (c,)
        t[P + n + '.bias'] = (c,)

    def res(n, i, o):
        gn(n + '.in_layers.0', i)
        cv(n + '.in_layers.2', o, i, 3)
        lin(n + '.emb_layers.1', o, 4 * b)
        gn(n + '.out_layers.0', o)
        cv(n + '.out_layers.3', o, o, 3)
        if i != o:
            cv(n + '.skip_connection', o, i, 1)

    def attn(n, c):
        gn(n + '.norm', c)
        cv(n + '.proj_in', c, c, 1)
        cv(n + '.proj_out', c, c, 1)
        tb = n + '.transformer_blocks.0'
        for a, kv in (('attn1', c), ('attn2', ctx)):
            lin(f'{tb}.{a}.to_q', c, c, False)
            lin(f'{tb}.{a}.to_k', c, kv, False)
            lin(f'{tb}.{a}.to_v', c, kv, False)
            lin(f'{tb}.{a}.to_out.0', c, c)
        lin(tb + '.ff.net.0.proj', 8 * c, c)  # GEGLU: value and gate, 4c each
        lin(tb + '.ff.net.2', c, 4 * c)
        for k in (1, 2, 3):
            gn(f'{tb}.norm{k}', c)

    lin('time_embed.0', 4 * b, b)
    lin('time_embed.2', 4 * b, 4 * b)
    cv('input_blocks.0.0', b, 4, 3)
    # (block, in, out, attention) for the ResBlocks; 'down' for the strided convolutions
    down = [(1, 1, 1, 1), (2, 1, 1, 1), (3, 'down', 1), (4, 1, 2, 1), (5, 2, 2, 1), (6, 'down', 2),
            (7, 2, 4, 1), (8, 4, 4, 1), (9, 'down', 4), (10, 4, 4, 0), (11, 4, 4, 0)]
    for row in down:
        if row[1] == 'down':
            cv(f'input_blocks.{row[0]}.0.op', row[2] * b, row[2] * b, 3)
            continue
        blk, i, o, a = row
        res(f'input_blocks.{blk}.0', i * b, o * b)
        if a:
            attn(f'input_blocks.{blk}.1', o * b)
    res('middle_block.0', 4 * b, 4 * b)
    attn('middle_block.1', 4 * b)
    res('middle_block.2', 4 * b, 4 * b)
    # (block, in = previous out + skip, out, attention, upsampler index or None)
    up = [(0, 8, 4, 0, None), (1, 8, 4, 0, None), (2, 8, 4, 0, 1),
          (3, 8, 4, 1, None), (4, 8, 4, 1, None), (5, 6, 4, 1, 2),
          (6, 6, 2, 1, None), (7, 4, 2, 1, None), (8, 3, 2, 1, 2),
          (9, 3, 1, 1, None), (10, 2, 1, 1, None), (11, 2, 1, 1, None)]
    for blk, i, o, a, u in up:
        res(f'output_blocks.{blk}.0', i * b, o * b)
        if a:
            attn(f'output_blocks.{blk}.1', o * b)
        if u is not None:
            cv(f'output_blocks.{blk}.{u}.conv', o * b, o * b, 3)
    gn('out.0', b)
    cv('out.2', 4, b, 3)
    return t


def text_encoder(vocab, d):
    """cond_stage_model.transformer.text_model.*: CLIP's text transformer, 12 layers, 77 positions."""
    P = 'cond_stage_model.transformer.text_model.'
    t = {P + 'embeddings.token_embedding.weight': (vocab, d),
         P + 'embeddings.position_embedding.weight': (77, d),
         P + 'final_layer_norm.weight': (d,), P + 'final_layer_norm.bias': (d,)}
    for i in range(12):
        L = f'{P}encoder.layers.{i}.'
        for p in ('q_proj', 'k_proj', 'v_proj', 'out_proj'):
            t[L + f'self_attn.{p}.weight'] = (d, d)
            t[L + f'self_attn.{p}.bias'] = (d,)
        for n in ('layer_norm1', 'layer_norm2'):
            t[L + n + '.weight'] = (d,)
            t[L + n + '.bias'] = (d,)
        t[L + 'mlp.fc1.weight'] = (4 * d, d)
        t[L + 'mlp.fc1.bias'] = (4 * d,)
        t[L + 'mlp.fc2.weight'] = (d, 4 * d)
        t[L + 'mlp.fc2.bias'] = (d,)
    return t


def autoencoder(b):
    """first_stage_model.*: AutoencoderKL, ch_mult (1,2,4,4), 2 ResBlocks down, 3 up, 4 latent channels."""
    P = 'first_stage_model.'
    t = {}

    def cv(n, o, i, k):
        t[P + n + '.weight'] = (o, i, k, k)
        t[P + n + '.bias'] = (o,)

    def gn(n, c):
        t[P + n + '.weight'] = (c,)
        t[P + n + '.bias'] = (c,)

    def res(n, i, o):
        gn(n + '.norm1', i)
        cv(n + '.conv1', o, i, 3)
        gn(n + '.norm2', o)
        cv(n + '.conv2', o, o, 3)
        if i != o:
            cv(n + '.nin_shortcut', o, i, 1)

    def mid(side, c):
        res(side + '.mid.block_1', c, c)
        gn(side + '.mid.attn_1.norm', c)
        for p in ('q', 'k', 'v', 'proj_out'):
            cv(f'{side}.mid.attn_1.{p}', c, c, 1)
        res(side + '.mid.block_2', c, c)

    chans = [b, 2 * b, 4 * b, 4 * b]
    cv('encoder.conv_in', b, 3, 3)
    prev = b
    for lv, c in enumerate(chans):
        for j in range(2):
            res(f'encoder.down.{lv}.block.{j}', prev if j == 0 else c, c)
        prev = c
        if lv < 3:
            cv(f'encoder.down.{lv}.downsample.conv', c, c, 3)
    mid('encoder', 4 * b)
    gn('encoder.norm_out', 4 * b)
    cv('encoder.conv_out', 8, 4 * b, 3)  # mean and log-variance of 4 latent channels
    cv('quant_conv', 8, 8, 1)
    cv('post_quant_conv', 4, 4, 1)
    cv('decoder.conv_in', 4 * b, 4, 3)
    mid('decoder', 4 * b)
    prev = 4 * b
    for lv in (3, 2, 1, 0):
        c = chans[lv]
        for j in range(3):
            res(f'decoder.up.{lv}.block.{j}', prev if j == 0 else c, c)
        prev = c
        if lv > 0:
            cv(f'decoder.up.{lv}.upsample.conv', c, c, 3)
    gn('decoder.norm_out', b)
    cv('decoder.conv_out', 3, b, 3)
    return t


def params(t):
    return sum(math.prod(s) for s in t.values())


def expected(small):
    if small:
        return {**text_encoder(4096, 192), **unet(64, 192), **autoencoder(32)}
    return {**text_encoder(49408, 768), **unet(256, 768), **autoencoder(128)}


def self_check():
    u, c, v = unet(320, 768), text_encoder(49408, 768), autoencoder(128)
    got = [(len(u), params(u)), (len(c), params(c)), (len(v), params(v))]
    want = [(686, 859520964), (196, 123060480), (248, 83653863)]
    if got != want:
        sys.exit(f'the list itself is wrong: (tensors, parameters) {got}, SD 1.5 has {want}')


def main():
    self_check()
    path, small = sys.argv[1], '--small' in sys.argv[2:]
    want = expected(small)
    with open(path, 'rb') as f:
        (n,) = struct.unpack('<Q', f.read(8))
        hdr = json.loads(f.read(n))
    hdr.pop('__metadata__', None)
    data = np.memmap(path, dtype=np.uint8, mode='r', offset=8 + n)
    errors = []
    for name in sorted(set(want) - set(hdr)):
        errors.append(f'missing {name} {want[name]}')
    for name in sorted(set(hdr) - set(want)):
        errors.append(f'not in SD 1.x: {name} {hdr[name]["shape"]}')
    checked_std = 0
    for name in sorted(set(want) & set(hdr)):
        e = hdr[name]
        if tuple(e['shape']) != want[name] or e['dtype'] != 'F16':
            errors.append(f'{name}: {e["dtype"]} {e["shape"]}, want F16 {list(want[name])}')
            continue
        a, z = e['data_offsets']
        x = data[a:z].view(np.float16).astype(np.float32)
        if not np.isfinite(x).all():
            errors.append(f'{name}: values not finite')
            continue
        shape = want[name]
        if name.endswith('.bias'):
            if np.any(x != 0):
                errors.append(f'{name}: a bias not 0')
        elif len(shape) == 1:
            if np.any(x != 1):
                errors.append(f'{name}: a norm weight not 1')
        elif x.size >= 65536:
            fan_in = math.prod(shape[1:])
            want_std = 1 / math.sqrt(fan_in)
            std, mean = float(x.std()), float(x.mean())
            if abs(std / want_std - 1) > 0.03 or abs(mean) > 0.03 * want_std:
                errors.append(f'{name}: std {std:.6g} mean {mean:.3g}, want std {want_std:.6g} mean 0')
            checked_std += 1
    for line in errors[:40]:
        print(line)
    if errors:
        print(f'{len(errors)} differences from SD 1.x in {path}')
        sys.exit(1)
    print(f'{path}: {len(want)} tensors as SD 1.x, all finite; std of {checked_std} weights as 1/sqrt(fan_in)')


main()
