"""Device references for A1111's prompt syntax and textual inversion, recorded with transformers and
diffusers themselves (run where torch, transformers and diffusers are installed; float32, CPU):

    PYTHONPATH=path/to/diffusers/src python3 tools/reference/a1111_device_refs.py tests/fixtures/extra

Writes OUT/a1111_refs.safetensors + OUT/a1111_refs.json, which tests/test_a1111_encode.c and
tests/test_embeddings.c compare with when present (relative L2 < 1e-5):

  - emphasis: for each tiny model and prompt, the chunks of tools/reference/a1111_prompts.py
    (the ids and weights the C chunker matches exactly) through transformers' CLIPTextModel /
    CLIPTextModelWithProjection as A1111 runs them (process_tokens: pad token after the first EOS;
    SD 1.x/2.x last_hidden_state, SDXL hidden_states[-2] of both encoders side by side; SD3 as
    A1111's sd3_cond.py: both joined, padded to the T5 width, one emphasis, zero T5 rows after), the
    "Original" emphasis in torch float32 (z * w, then * mean(z) / mean(z * w)), the chunks
    concatenated: `<case>.cond` [1][tokens][dim], SDXL / SD3 also `<case>.pooled` (the first
    chunk's text_embeds);
  - textual inversion: the embedding files tests/test_embeddings.c writes (same vectors), loaded
    with diffusers' load_textual_inversion, encode_prompt of a prompt with the trigger:
    `<case>.prompt_embeds` (SDXL: and `<case>.pooled_prompt_embeds`).
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import a1111_prompts as ref  # noqa: E402

OUT = sys.argv[1]
FIX = "tests/fixtures"
torch.set_grad_enabled(False)
H = 16  # the tiny text encoders' width

PROMPTS = [
    "a photo of a cat",
    "a (red:1.3) fox, ((masterpiece)), [blurry]",
    ", ".join(["(thing %d:0.7)" % i if i % 3 == 0 else "thing %d" % i for i in range(30)]),
    "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))). BREAK (night:1.2)",
]


def emphasis(z, weights):
    """A1111's EmphasisOriginal.after_transformers, in torch float32."""
    w = torch.asarray(weights).reshape(1, -1, 1)
    m0 = z.mean()
    z = z * w
    return z * (m0 / z.mean())


def encode_sd3(folder, text):
    """A1111's SD3 (sd3_cond.py): both CLIPs' hidden_states[-2] joined, padded to the T5 width,
    one emphasis over the row; pooled = both text_embeds of the first chunk; then as many T5 rows
    as CLIP rows (zeros: sd3-tiny has no T5)."""
    width = json.load(open(f"{folder}/transformer/config.json"))["joint_attention_dim"]
    bpe = ref.ClipBpe(ROOT_CFG)
    chunks = ref.chunk_line(bpe, text, {})
    toks = [CLIPTokenizer.from_pretrained(f"{folder}/{t}") for t in ("tokenizer", "tokenizer_2")]
    models = [CLIPTextModelWithProjection.from_pretrained(f"{folder}/{m}").float().eval()
              for m in ("text_encoder", "text_encoder_2")]
    rows, pooled = [], None
    for k, c in enumerate(chunks):
        outs = []
        for tok, model in zip(toks, models):
            ids = list(c["ids"])
            if tok.pad_token_id != tok.eos_token_id:
                e = ids.index(tok.eos_token_id)
                ids = ids[:e + 1] + [tok.pad_token_id] * (len(ids) - e - 1)
            outs.append(model(torch.tensor([ids]), output_hidden_states=True))
        lg = torch.cat([o.hidden_states[-2] for o in outs], dim=-1)
        lg = torch.nn.functional.pad(lg, (0, width - lg.shape[-1]))[..., :width]
        rows.append(emphasis(lg, c["weights"]))
        if k == 0:
            pooled = torch.cat([o.text_embeds for o in outs], dim=-1)
    clip = torch.cat(rows, dim=1)
    return torch.cat([clip, torch.zeros_like(clip)], dim=1), pooled


def encode_a1111(folder, encoders, text):
    """encoders: [(subfolder, class, hidden state index or None for last_hidden_state)]."""
    if encoders == "sd3":
        return encode_sd3(folder, text)
    bpe = ref.ClipBpe(os.path.join(ROOT_CFG))
    chunks = ref.chunk_line(bpe, text, {})
    parts, pooled = [], None
    for sub, cls, layer in encoders:
        tok = CLIPTokenizer.from_pretrained(f"{folder}/tokenizer" + sub[len("text_encoder"):])
        model = cls.from_pretrained(f"{folder}/{sub}").float().eval()
        zs = []
        for k, c in enumerate(chunks):
            ids = list(c["ids"])
            if tok.pad_token_id != tok.eos_token_id:  # process_tokens
                e = ids.index(tok.eos_token_id)
                ids = ids[:e + 1] + [tok.pad_token_id] * (len(ids) - e - 1)
            out = model(torch.tensor([ids]), output_hidden_states=True)
            z = out.last_hidden_state if layer is None else out.hidden_states[layer]
            zs.append(emphasis(z, c["weights"]))
            if k == 0 and cls is CLIPTextModelWithProjection:
                pooled = out.text_embeds
        parts.append(torch.cat(zs, dim=1))
    return torch.cat(parts, dim=2), pooled


ROOT_CFG = "configs/clip-bpe"
MODELS = {
    "sd15-tiny": [("text_encoder", CLIPTextModel, None)],
    "sd2v-tiny": [("text_encoder", CLIPTextModel, None)],
    "sdxl-tiny": [("text_encoder", CLIPTextModel, -2), ("text_encoder_2", CLIPTextModelWithProjection, -2)],
    "sd3-tiny": "sd3",
}


def make_vectors(n, seed):  # tests/test_embeddings.c's make_vectors
    return torch.tensor([(((i * 37 + seed * 11) % 129) - 64) / 128.0 for i in range(n)], dtype=torch.float32)


def main():
    tensors, meta = {}, {"emphasis": [], "embeddings": []}
    for model, encs in MODELS.items():
        for i, prompt in enumerate(PROMPTS):
            name = f"{model}.a1111.{i}"
            cond, pooled = encode_a1111(f"{FIX}/{model}/pipeline", encs, prompt)
            tensors[f"{name}.cond"] = cond.contiguous()
            if pooled is not None:
                tensors[f"{name}.pooled"] = pooled.contiguous()
            meta["emphasis"].append({"name": name, "model": model, "prompt": prompt})
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from safetensors.torch import save_file as save
    os.makedirs(f"{OUT}/a1111_refs_files", exist_ok=True)
    sd = StableDiffusionPipeline.from_pretrained(f"{FIX}/sd15-tiny/pipeline", torch_dtype=torch.float32)
    f = f"{OUT}/a1111_refs_files/mytrig.safetensors"
    save({"emb_params": make_vectors(3 * H, 1)[:2 * H].reshape(2, H)}, f)
    sd.load_textual_inversion(f, token="mytrig")
    pe, _ = sd.encode_prompt("a mytrig photo", "cpu", 1, False)
    tensors["sd15-tiny.ti.0.prompt_embeds"] = pe.contiguous()
    meta["embeddings"].append({"name": "sd15-tiny.ti.0", "model": "sd15-tiny", "file": "mytrig.safetensors",
                               "prompt": "a mytrig photo"})
    xl = StableDiffusionXLPipeline.from_pretrained(f"{FIX}/sdxl-tiny/pipeline", torch_dtype=torch.float32)
    f = f"{OUT}/a1111_refs_files/xlemb.safetensors"
    l, g = make_vectors(H, 3).reshape(1, H), make_vectors(H, 4).reshape(1, H)
    save({"clip_l": l, "clip_g": g}, f)
    xl.load_textual_inversion(l, token="xlemb", text_encoder=xl.text_encoder, tokenizer=xl.tokenizer)
    xl.load_textual_inversion(g, token="xlemb", text_encoder=xl.text_encoder_2, tokenizer=xl.tokenizer_2)
    pe, _, ppe, _ = xl.encode_prompt("a xlemb photo", device="cpu", num_images_per_prompt=1,
                                     do_classifier_free_guidance=False)
    tensors["sdxl-tiny.ti.0.prompt_embeds"] = pe.contiguous()
    tensors["sdxl-tiny.ti.0.pooled_prompt_embeds"] = ppe.contiguous()
    meta["embeddings"].append({"name": "sdxl-tiny.ti.0", "model": "sdxl-tiny", "file": "xlemb.safetensors",
                               "prompt": "a xlemb photo"})
    save_file(tensors, f"{OUT}/a1111_refs.safetensors")
    json.dump(meta, open(f"{OUT}/a1111_refs.json", "w"), indent=1)


if __name__ == "__main__":
    main()
