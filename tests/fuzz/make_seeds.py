#!/usr/bin/env python3
"""Writes the seed corpus of the libFuzzer harnesses (tests/fuzz/corpus/<harness>/): a few small,
valid inputs per parser so the fuzzer starts from the formats' real structure. Run from the
repository root; needs a C compiler and libjpeg for the JPEG seeds. The corpus is committed,
this script only documents (and can redo) where it came from."""
import json
import os
import struct
import subprocess
import tempfile
import zlib

ROOT = "tests/fuzz/corpus"
FIX = "tests/fixtures"


def put(harness, name, data):
    os.makedirs(f"{ROOT}/{harness}", exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(f"{ROOT}/{harness}/{name}", "wb") as f:
        f.write(data)


def safetensors(tensors, metadata=None):
    """tensors: [(name, dtype, shape, bytes)] -> a safetensors file."""
    header, blob = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + blob


def gguf(tensors, alignment=32, shapes=()):
    """tensors: [(name, ggml type id, dims innermost first, bytes)] -> a GGUF v3 file (read through
    st_open, which hands GGUF files to core/gguf_st.c). shapes: [(name, [dims in torch order])]
    written as city96's comfy.gguf.orig_shape.<name> INT32 arrays."""
    def string(t):
        b = t.encode()
        return struct.pack("<Q", len(b)) + b
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), 1 + len(shapes))
    out += string("general.alignment") + struct.pack("<II", 4, alignment)  # UINT32
    for name, dims in shapes:  # ARRAY of INT32
        out += string("comfy.gguf.orig_shape." + name) + struct.pack("<IIQ", 9, 5, len(dims))
        out += b"".join(struct.pack("<i", d) for d in dims)
    blob = b""
    for name, typ, dims, data in tensors:
        out += string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", typ, len(blob))
        blob += data + b"\0" * (-len(data) % alignment)
    out += b"\0" * (-len(out) % alignment)
    return out + blob


def f16(n):
    return b"\x00\x3c" * n


def f32(n):
    return struct.pack(f"<{n}f", *[0.5] * n)


# safetensors: every dtype, a scalar, an empty tensor, metadata.
put("safetensors", "dtypes", safetensors([
    ("a.f32", "F32", [2, 2], f32(4)), ("b.f16", "F16", [3], f16(3)), ("c.bf16", "BF16", [1], b"\x80\x3f"),
    ("d.f64", "F64", [1], struct.pack("<d", 1.0)), ("e.i64", "I64", [1], b"\x01" + b"\0" * 7),
    ("f.i32", "I32", [], b"\x01\0\0\0"), ("g.u8", "U8", [0], b""), ("h.bool", "BOOL", [1], b"\x01"),
    ("i.i8", "I8", [2], b"\x01\x02"), ("j.i16", "I16", [1], b"\x01\x00")], {"format": "pt"}))
put("safetensors", "one", safetensors([("w", "F32", [1, 3], f32(3))]))
# GGUF through the same entry point: Q8_0 (block of 32: f16 scale + 32 int8), Q4_K (256: d, dmin,
# 12 scale bytes, 128 nibble bytes), F16 and F32.
put("safetensors", "gguf", gguf([
    ("q8", 8, [32, 2], (b"\x00\x3c" + bytes(range(32))) * 2),
    ("q4k", 12, [256, 1], b"\x00\x3c\x00\x38" + bytes(range(12)) + bytes(range(128))),
    ("h", 1, [4], f16(4)),
    ("f", 0, [3], f32(3)),
]))
# city96's reshaped tensor: a Q4_K row of 256 that is a [4, 64] matrix (comfy.gguf.orig_shape).
put("safetensors", "gguf_reshaped", gguf([
    ("q4k", 12, [256, 1], b"\x00\x3c\x00\x38" + bytes(range(12)) + bytes(range(128))),
    ("f", 0, [3], f32(3)),
], shapes=[("q4k", [4, 64])]))
put("safetensors", "embedding", open(f"{FIX}/extra/a1111_refs_files/mytrig.safetensors", "rb").read())

# Embeddings: the byte before the file picks the tiny SD 1.5 (even) or SDXL (odd) pipeline.
put("embedding", "sd15_a1111", b"\0" + safetensors([("emb_params", "F32", [2, 16], f32(32))]))
put("embedding", "sd15_diffusers", b"\0" + safetensors([("<cat-toy>", "F32", [16], f32(16))]))
xl = open(f"{FIX}/extra/a1111_refs_files/xlemb.safetensors", "rb").read()
put("embedding", "sdxl", b"\1" + xl)

# Single-file checkpoints: the keys the family detection reads, with tiny shapes.
U = "model.diffusion_model."
put("single_file", "sd15", safetensors([
    (U + "input_blocks.0.0.weight", "F16", [1, 4, 1, 1], f16(4)),
    (U + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", "F16", [1, 768], f16(768)),
    (U + "input_blocks.3.0.op.weight", "F16", [1], f16(1)),
    ("first_stage_model.decoder.up.1.block.0.conv1.weight", "F16", [1], f16(1)),
    ("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", "F16", [1, 1], f16(1)),
    ("v_pred", "F32", [], f32(1))]))
put("single_file", "sdxl", safetensors([
    (U + "input_blocks.0.0.weight", "F16", [1, 4, 1, 1], f16(4)),
    (U + "label_emb.0.0.weight", "F16", [1, 2816], f16(2816)),
    ("conditioner.embedders.1.model.ln_final.weight", "F16", [1], f16(1)),
    ("conditioner.embedders.0.transformer.text_model.final_layer_norm.weight", "F16", [1], f16(1))]))
put("single_file", "sd3", safetensors([
    (U + "joint_blocks.0.context_block.attn.qkv.weight", "F16", [3, 1], f16(3)),
    (U + "joint_blocks.0.x_block.attn2.qkv.weight", "F16", [3, 1], f16(3)),
    (U + "pos_embed", "F16", [1, 4, 1], f16(4)),
    (U + "context_embedder.weight", "F16", [1, 1], f16(1)),
    ("text_encoders.clip_l.transformer.text_model.final_layer_norm.weight", "F16", [1], f16(1)),
    ("text_encoders.t5xxl.transformer.encoder.final_layer_norm.weight", "F16", [1], f16(1))]))

# LoRA files: kohya (with alpha), diffusers/PEFT, LyCORIS LoHa, a FLUX one.
K = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
put("lora", "kohya", safetensors([
    (K + ".lora_down.weight", "F16", [1, 4], f16(4)), (K + ".lora_up.weight", "F16", [4, 1], f16(4)),
    (K + ".alpha", "F32", [], f32(1)),
    ("lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", "F16", [1, 4], f16(4)),
    ("lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight", "F16", [4, 1], f16(4))],
    {"ss_network_module": "networks.lora"}))
put("lora", "ldm", safetensors([
    ("lora_unet_input_blocks_1_1_proj_in.lora_down.weight", "F16", [1, 4], f16(4)),
    ("lora_unet_input_blocks_1_1_proj_in.lora_up.weight", "F16", [4, 1], f16(4))]))
D = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k"
put("lora", "peft", safetensors([
    (D + ".lora_A.weight", "F16", [1, 4], f16(4)), (D + ".lora_B.weight", "F16", [4, 1], f16(4))]))
put("lora", "loha", safetensors([
    (K + ".hada_w1_a", "F16", [4, 1], f16(4)), (K + ".hada_w1_b", "F16", [1, 4], f16(4)),
    (K + ".hada_w2_a", "F16", [4, 1], f16(4)), (K + ".hada_w2_b", "F16", [1, 4], f16(4)),
    (K + ".alpha", "F32", [], f32(1))]))
put("lora", "flux", safetensors([
    ("lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight", "F16", [1, 4], f16(4)),
    ("lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight", "F16", [12, 1], f16(12))]))

# Configs: the fixtures' model_index.json and component configs.
for src, name in [("sd15-tiny/pipeline/model_index.json", "model_index_sd15"),
                  ("flux-tiny/pipeline/model_index.json", "model_index_flux"),
                  ("sd15-tiny/pipeline/unet/config.json", "unet_sd15"),
                  ("sdxl-tiny/pipeline/unet/config.json", "unet_sdxl"),
                  ("flux-tiny/pipeline/transformer/config.json", "transformer_flux")]:
    put("config", name, open(f"{FIX}/{src}", "rb").read())

# Prompts (CLIP, T5, A1111's syntax).
prompts = {
    "plain": "a photograph of an astronaut riding a horse",
    "unicode": "caf\u00e9 \u00fcber \u65e5\u672c\u8a9e \U0001F600 na\u00efve  tabs\tand\nnewlines's don't",
    "numbers": "1234567 3.14 x--y __init__ <|endoftext|> #tag @user",
}
for k, v in prompts.items():
    put("clip_prompt", k, v)
    put("t5_prompt", k, v)
put("a1111", "emphasis", "\x13(masterpiece:1.2), ((best)), [low], \\(esc\\) BREAK cat AND dog")
put("a1111", "editing", "\x13a [cat:dog:0.5] in [summer|winter] [[x:y:3]:z:10] [from::4] [:to:2]")
put("a1111", "nested", "\x40((a [b:(c:1.5):0.3] | d)) [e|f|g] (h:-1) (i:abc) ]] ))")

# CLIP vocabulary/merges/prompt folder (NUL-separated).
vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "c": 3, "a": 4, "t</w>": 5,
         "ca": 6, "cat</w>": 7, "!": 8, "!</w>": 9}
config = open(f"{FIX}/clip_tokenizer/tokenizer_config.json").read()
put("clip_vocab", "small", json.dumps(vocab) + "\0#version: 0.2\nc a\nca t</w>\n\0" + config + "\0a cat!")

# T5 tokenizer.json: the fixture's without its 300 KB charsmap, a few hundred pieces.
t5 = json.load(open(f"{FIX}/sd3t5-tiny/pipeline/tokenizer_3/tokenizer.json"))
t5["normalizer"] = None
t5["added_tokens"] = t5["added_tokens"][:4]
t5["model"]["vocab"] = t5["model"]["vocab"][:200]
put("t5_json", "small", json.dumps(t5) + "\0Hello world, caf\u00e9!")

# Server request bodies.
put("request", "a1111_txt2img", json.dumps({
    "prompt": "a cat <lora:style:0.8>", "negative_prompt": "blurry", "steps": 20, "width": 512,
    "height": 512, "cfg_scale": 7.5, "seed": 42, "sampler_name": "Euler a", "batch_size": 2,
    "n_iter": 1, "override_settings": {"sd_model_checkpoint": "sd15"}}))
put("request", "a1111_img2img", json.dumps({
    "prompt": "x", "init_images": ["data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"],
    "denoising_strength": 0.5, "mask": None}))
put("request", "openai", json.dumps({
    "prompt": "a cat", "model": "sd15", "n": 2, "size": "512x768", "quality": "high",
    "output_format": "jpeg", "output_compression": 80, "response_format": "b64_json"}))
put("request", "openai_form", json.dumps({"prompt": "a", "n": "1", "size": "auto", "seed": "7"}))

# Images: tiny PNGs (RGB with a text chunk, grey+alpha, 16-bit, palette, interlaced, eXIf).
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(w, h, depth, ctype, rows, extra=b"", interlace=0):
    raw = b"".join(b"\0" + r for r in rows)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, interlace))
            + extra + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


put("png", "rgb_text", png(3, 2, 8, 2, [bytes(range(9)), bytes(range(9, 18))],
                           chunk(b"tEXt", b"parameters\0a cat, Steps: 20")))
put("png", "grey_alpha", png(2, 2, 8, 4, [b"\x80\xff\x10\x00", b"\x00\x00\xff\xff"],
                             chunk(b"zTXt", b"parameters\0\0" + zlib.compress(b"zipped"))))
put("png", "rgb16", png(1, 2, 16, 2, [b"\x12\x34" * 3, b"\xff\xff" * 3]))
put("png", "palette", png(4, 1, 2, 3, [b"\x1b"], chunk(b"PLTE", b"\xff\0\0\0\xff\0\0\0\xff\xff\xff\xff")
                          + chunk(b"tRNS", b"\x80")))
put("png", "interlaced", png(3, 3, 8, 0, [b"\x01\x02\x03"] * 3, interlace=1))
exif = b"MM\0*\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0\0\0\0\0"
put("png", "exif6", png(2, 1, 8, 2, [b"\xff\0\0\0\0\xff"], chunk(b"eXIf", exif)
                        + chunk(b"iTXt", b"parameters\0\0\0\0\0caf\xc3\xa9")))

# JPEGs through libjpeg (a throwaway program): RGB 4:2:0, grey, progressive, an Exif orientation.
JPEG_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <jpeglib.h>
int main(int argc, char **argv) {
    int w = atoi(argv[2]), h = atoi(argv[3]), grey = atoi(argv[4]), prog = atoi(argv[5]);
    int orient = atoi(argv[6]);
    FILE *f = fopen(argv[1], "wb");
    struct jpeg_compress_struct c; struct jpeg_error_mgr e;
    c.err = jpeg_std_error(&e); jpeg_create_compress(&c); jpeg_stdio_dest(&c, f);
    c.image_width = w; c.image_height = h; c.input_components = grey ? 1 : 3;
    c.in_color_space = grey ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&c); jpeg_set_quality(&c, 60, TRUE);
    if (prog) jpeg_simple_progression(&c);
    jpeg_start_compress(&c, TRUE);
    if (orient) {
        unsigned char x[] = {'E','x','i','f',0,0,'I','I',42,0,8,0,0,0,1,0,0x12,1,3,0,1,0,0,0,0,0,0,0,0,0,0,0};
        x[24] = (unsigned char)orient; jpeg_write_marker(&c, JPEG_APP0 + 1, x, sizeof x);
    }
    unsigned char row[3 * 64];
    while (c.next_scanline < c.image_height) {
        for (int i = 0; i < w * c.input_components; i++) row[i] = (unsigned char)(i * 37 + c.next_scanline * 11);
        JSAMPROW r = row; jpeg_write_scanlines(&c, &r, 1);
    }
    jpeg_finish_compress(&c); fclose(f); return 0;
}
"""
with tempfile.TemporaryDirectory() as tmp:
    with open(f"{tmp}/w.c", "w") as f:
        f.write(JPEG_C)
    subprocess.run(["cc", f"{tmp}/w.c", "-o", f"{tmp}/w", "-ljpeg"], check=True)
    os.makedirs(f"{ROOT}/jpeg", exist_ok=True)
    for name, args in [("rgb", "8 8 0 0 0"), ("grey", "9 7 1 0 0"), ("progressive", "16 8 0 1 0"),
                       ("exif6", "4 2 0 0 6")]:
        subprocess.run([f"{tmp}/w", f"{ROOT}/jpeg/{name}.jpg", *args.split()], check=True)

# sd-server multipart bodies (POST /v1/images/edits): Content-Type, NUL, body. As curl -F and the
# openai npm client write them: CRLF, a quoted or bare boundary, files with their own headers.
PNG1 = png(1, 1, 8, 2, [b"\x80\x40\x20"])


def form(boundary, fields, epilogue=b""):
    out = b""
    for name, value, filename in fields:
        disp = f'Content-Disposition: form-data; name="{name}"'
        if filename:
            disp += f'; filename="{filename}"\r\nContent-Type: image/png'
        out += f"--{boundary}\r\n{disp}\r\n\r\n".encode() + value + b"\r\n"
    return out + f"--{boundary}--\r\n".encode() + epilogue


B = "------------------------d74496d66958873e"
put("multipart", "curl", f"multipart/form-data; boundary={B}\0".encode() + form(B, [
    ("prompt", b"a dog", None), ("n", b"1", None), ("size", b"64x64", None), ("seed", b"3", None),
    ("image", PNG1, "init.png"), ("mask", PNG1, "mask.png")]))
B = "----formdata-undici-037172983431"
put("multipart", "openai_npm", f'multipart/form-data; boundary="{B}"\0'.encode() + form(B, [
    ("image[]", PNG1, "a.png"), ("image[]", PNG1, "b.png"), ("prompt", b"x", None),
    ("response_format", b"b64_json", None), ("output_format", b"jpeg", None),
    ("strength", b"0.6", None)], b"\r\n"))
put("multipart", "empty", b"multipart/form-data; boundary=b\0--b--")

# sd-server handlers: a byte picking the endpoint (fuzz_handlers.c's order), the Content-Type (or
# the file id), NUL, the body.
png_b64 = __import__("base64").b64encode(png(1, 1, 8, 2, [b"\0\0\0"], chunk(
    b"tEXt", b"parameters\0a cat\nNegative prompt: ugly\nSteps: 20, Sampler: Euler a, Seed: 7"))).decode()
put("handlers", "txt2img", b"\0application/json\0" + json.dumps({
    "prompt": "a cat <lora:x:0.5>", "steps": 2, "width": 64, "height": 64, "seed": 1,
    "override_settings": {"sd_model_checkpoint": "m"}}).encode())
put("handlers", "img2img", b"\1application/json\0" + json.dumps({
    "prompt": "x", "init_images": ["data:image/png;base64," + png_b64], "denoising_strength": 0.5}).encode())
put("handlers", "options", b"\2application/json\0" + json.dumps({"sd_model_checkpoint": "m [abc123]"}).encode())
put("handlers", "png_info", b"\3application/json\0" + json.dumps({"image": png_b64}).encode())
put("handlers", "generations", b"\4application/json\0" + json.dumps({
    "prompt": "a cat", "model": "m", "n": 1, "size": "64x64", "response_format": "url"}).encode())
B = "XyZ"
put("handlers", "edits", b"\5multipart/form-data; boundary=XyZ\0" + form(B, [
    ("prompt", b"a dog", None), ("model", b"m", None), ("image", PNG1, "i.png")]))
put("handlers", "file", b"\6" + b"0123456789abcdef0123456789abcdef.png\0")

# GGUF files (tests/fuzz/fuzz_gguf.c): one tensor of every type the reader takes, metadata of
# every value type, a v2 file; and issue 20's bad cases (each refused with a clear error, kept
# here so the fuzzer starts from them and make test replays them).
GG_BLOCK = {0: (1, 4), 1: (1, 2), 30: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24),
            8: (32, 34), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210)}
GG_NAMES = {0: "f32", 1: "f16", 30: "bf16", 2: "q4_0", 3: "q4_1", 6: "q5_0", 7: "q5_1", 8: "q8_0",
            10: "q2_k", 11: "q3_k", 12: "q4_k", 13: "q5_k", 14: "q6_k"}


def gg_string(t):
    b = t.encode()
    return struct.pack("<Q", len(b)) + b


def gg_bytes(n, salt):
    """n deterministic bytes whose fp16 pairs stay finite (no 0x7c-0x7f / 0xfc-0xff high bytes)."""
    return bytes(((i * 37 + salt * 11) % 251) & 0x7b for i in range(n))


def gguf_file(tensors, kvs=(), version=3, alignment=32, offsets=None):
    """tensors: [(name, type, dims innermost first, bytes)]; kvs: [(key, value type, value bytes)];
    offsets: explicit data offsets (else packed, aligned)."""
    kv = [("general.alignment", 4, struct.pack("<I", alignment))] + list(kvs)
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kv))
    for key, typ, val in kv:
        out += gg_string(key) + struct.pack("<I", typ) + val
    blob, offs = b"", []
    for name, typ, dims, data in tensors:
        offs.append(len(blob))
        blob += data + b"\0" * (-len(data) % alignment)
    for i, (name, typ, dims, data) in enumerate(tensors):
        off = offsets[i] if offsets else offs[i]
        out += gg_string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", typ, off)
    out += b"\0" * (-len(out) % alignment)
    return out + blob


def gg_tensor(typ, rows=1, name=None):
    elems, nbytes = GG_BLOCK[typ]
    per_row = 32 if elems == 1 else elems
    return (name or GG_NAMES[typ], typ, [per_row, rows], gg_bytes(per_row // elems * nbytes * rows, typ))


GG_KVS = [("general.architecture", 8, gg_string("flux")), ("t.u8", 0, b"\x07"), ("t.i8", 1, b"\xf9"),
          ("t.u16", 2, b"\x01\x02"), ("t.i16", 3, b"\xff\xff"), ("t.u32", 4, b"\x01\0\0\0"),
          ("t.i32", 5, b"\xff\xff\xff\xff"), ("t.f32", 6, struct.pack("<f", 0.5)), ("t.bool", 7, b"\x01"),
          ("t.u64", 10, struct.pack("<Q", 1 << 40)), ("t.i64", 11, struct.pack("<q", -5)),
          ("t.f64", 12, struct.pack("<d", 2.5)),
          ("t.arr_i32", 9, struct.pack("<IQ", 5, 3) + struct.pack("<3i", 1, 2, 3)),
          ("t.arr_str", 9, struct.pack("<IQ", 8, 2) + gg_string("a") + gg_string("bc"))]
# Every type, one row each, with every kind of metadata.
put("gguf", "all_types", gguf_file([gg_tensor(t) for t in GG_BLOCK], GG_KVS))
# Each quantized block type alone, two rows (a 2-D weight as the Linear layers read it).
for t in (2, 3, 6, 7, 8, 10, 11, 12, 13, 14):
    put("gguf", GG_NAMES[t], gguf_file([gg_tensor(t, rows=2, name="lin.weight")]))
put("gguf", "v2", gguf_file([gg_tensor(8), gg_tensor(0)], version=2))
put("gguf", "align64", gguf_file([gg_tensor(8), gg_tensor(1)], alignment=64))
# The bad cases of issue 20.
put("gguf", "bad_unknown_type", gguf_file([("w", 99, [32, 1], gg_bytes(34, 1))]))
put("gguf", "bad_iq_type", gguf_file([("w", 16, [256, 1], gg_bytes(66, 1))]))
put("gguf", "bad_row_blocks", gguf_file([("w", 8, [48, 2], gg_bytes(34 * 3, 1))]))  # 96 values, rows of 48
put("gguf", "bad_offset_past_end", gguf_file([gg_tensor(8), gg_tensor(12)], offsets=[0, 1 << 20]))
put("gguf", "bad_misaligned", gguf_file([gg_tensor(8), gg_tensor(12)], offsets=[0, 40]))
put("gguf", "bad_overlap", gguf_file([gg_tensor(8), gg_tensor(12)], offsets=[0, 0]))
put("gguf", "bad_duplicate_names", gguf_file([gg_tensor(8, name="w"), gg_tensor(1, name="w")]))
put("gguf", "bad_duplicate_keys", gguf_file([gg_tensor(8)], [("k", 4, b"\1\0\0\0"), ("k", 4, b"\2\0\0\0")]))
put("gguf", "bad_truncated", gguf_file([gg_tensor(8), gg_tensor(12)])[:-40])
put("gguf", "bad_big_endian", b"GGUF\0\0\0\3" + gguf_file([gg_tensor(8)])[8:])
put("gguf", "bad_huge_shape", gguf_file([("w", 8, [1 << 40, 1 << 20], gg_bytes(34, 1))]))
