"""References recorded by diffusers itself for files people download: single-file checkpoints made
by diffusers' own conversion scripts, and LoRAs loaded by load_lora_weights + set_adapters.

Run on a machine with torch + transformers (+ peft for the LoRA runs), from the repository root,
with diffusers' source (src/ and scripts/) unpacked at DIFFUSERS:
    DIFFUSERS=path/to/diffusers python3 tools/reference/file_refs.py OUTDIR
Writes into OUTDIR:
- single_files.json: for sd15-tiny, sd2v-tiny, sdxl-tiny, the tensors of the file that diffusers'
  scripts/convert_diffusers_to_original_{stable_diffusion,sdxl}.py writes from the fixture folder
  (name, dtype, shape, crc32 of the bytes), so the tests can check that the original-layout files
  they write (tests/ldm_writer.c) are what diffusers' script writes, tensor for tensor; and the
  run made by <Pipeline>.from_single_file(that file, config=fixture folder), recorded in
  file_runs.safetensors (`<run>.image`, `<run>.latents`), with the largest pixel difference to the
  same run from the folder.
- lora/*.safetensors: small random LoRAs in the formats people share (kohya-ss, LoCon, PEFT,
  kohya SDXL in the original-layout names, FLUX in kohya and ComfyUI/BFL naming), and their runs
  in file_runs.safetensors / file_runs.json: diffusers' load_lora_weights + set_adapters where
  diffusers can, else (text-encoder LoRAs: diffusers issue 13984 with transformers 5; no peft)
  the fixture with the deltas merged into its weights by merge_float64 below, run by diffusers.
Everything runs in float32 on the CPU, as the shared fixtures were made.
"""
import json
import os
import shutil
import subprocess
import sys
import zlib

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import diffusers
from diffusers import FluxPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

OUT = sys.argv[1]
FIX = "tests/fixtures"
DIFFUSERS = os.environ["DIFFUSERS"]
TMP = os.path.join(OUT, "tmp")
torch.set_grad_enabled(False)
os.makedirs(f"{OUT}/lora", exist_ok=True)
os.makedirs(TMP, exist_ok=True)

TENSORS, META = {}, {}
PIPES = {"sd15-tiny": StableDiffusionPipeline, "sd2v-tiny": StableDiffusionPipeline,
         "sdxl-tiny": StableDiffusionXLPipeline, "flux-tiny": FluxPipeline}
# one call per model, small and quick; the scheduler is the folder's unless named
CALLS = {
    "sd15-tiny": dict(prompt="a lighthouse at dawn, oil painting", negative_prompt="blurry", seed=7,
                      num_inference_steps=4, guidance_scale=7.5, height=64, width=64,
                      scheduler="EulerDiscreteScheduler"),
    "sd2v-tiny": dict(prompt="a lighthouse at dawn, oil painting", negative_prompt="blurry", seed=7,
                      num_inference_steps=4, guidance_scale=7.5, height=64, width=64,
                      scheduler="DDIMScheduler"),
    "sdxl-tiny": dict(prompt="a lighthouse at dawn, oil painting", negative_prompt="blurry", seed=7,
                      num_inference_steps=4, guidance_scale=5.0, height=64, width=64,
                      scheduler="EulerDiscreteScheduler"),
    "flux-tiny": dict(prompt="a lighthouse at dawn, oil painting", seed=7, num_inference_steps=4,
                      guidance_scale=3.5, height=64, width=64, max_sequence_length=32),
}


def folder(model):
    return f"{FIX}/{model}/pipeline"


def run(pipe, name, model, **extra_meta):
    call = dict(CALLS[model])
    sched = call.pop("scheduler", None)
    if sched:
        pipe.scheduler = getattr(diffusers, sched).from_config(pipe.scheduler.config)
    seed = call.pop("seed")
    last = {}

    def on_step(p, i, t, kw):
        last["latents"] = kw["latents"].clone()
        return kw

    img = pipe(**call, generator=torch.Generator("cpu").manual_seed(seed), output_type="np",
               callback_on_step_end=on_step).images
    TENSORS[f"{name}.image"] = torch.from_numpy(img).contiguous()
    TENSORS[f"{name}.latents"] = last["latents"].contiguous()
    META[name] = dict(CALLS[model], model=model, pipeline_class=type(pipe).__name__,
                      scheduler_class=type(pipe.scheduler).__name__, **extra_meta)
    return img


def from_folder(model, root=None):
    extra = {"safety_checker": None} if PIPES[model] is StableDiffusionPipeline else {}
    return PIPES[model].from_pretrained(root or folder(model), torch_dtype=torch.float32, **extra)


# ---------------------------------------------------------------------------------------------
# Single files

def transformers4_names(src, dst):
    """A copy of the fixture folder whose CLIP files carry the `text_model.` prefix, as every
    release saved by transformers 4 does (the conversion scripts' key patterns expect it)."""
    shutil.copytree(src, dst, symlinks=False)
    for te in ("text_encoder", "text_encoder_2"):
        path = f"{dst}/{te}/model.safetensors"
        if not os.path.exists(path):
            continue
        sd = load_file(path)
        if not any(k.startswith("text_model.") for k in sd):
            sd = {(k if k.startswith("text_projection") else "text_model." + k): v for k, v in sd.items()}
            save_file(sd, path)


def manifest(path):
    out = []
    with safe_open(path, "pt") as f:
        for k in sorted(f.keys()):
            t = f.get_tensor(k).contiguous()
            raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
            out.append(dict(name=k, dtype=str(t.dtype).replace("torch.", ""), shape=list(t.shape),
                            crc32=zlib.crc32(raw)))
    return out


def single_files():
    scripts = {"sd15-tiny": "convert_diffusers_to_original_stable_diffusion.py",
               "sd2v-tiny": "convert_diffusers_to_original_stable_diffusion.py",
               "sdxl-tiny": "convert_diffusers_to_original_sdxl.py"}
    manifests = {}
    for model, script in scripts.items():
        norm = f"{TMP}/{model}-t4"
        transformers4_names(folder(model), norm)
        path = f"{TMP}/{model}.safetensors"
        subprocess.run([sys.executable, f"{DIFFUSERS}/scripts/{script}", "--model_path", norm,
                        "--checkpoint_path", path, "--use_safetensors"], check=True)
        manifests[model] = manifest(path)
        extra, note = {"safety_checker": None}, ""
        if model == "sdxl-tiny":
            # from_single_file tells OpenCLIP bigG by its real width (1280): at the tiny width it
            # loads embedders.0 into text_encoder_2 and fails. The encoders come from the folder
            # (their layout is checked through the manifest); UNet and VAE from the file.
            ref = from_folder(model)
            extra = dict(text_encoder=ref.text_encoder, text_encoder_2=ref.text_encoder_2)
            note = "text encoders from the folder (diffusers detects bigG by width 1280)"
        single = PIPES[model].from_single_file(path, config=folder(model), torch_dtype=torch.float32, **extra)
        a = run(single, f"single.{model}", model, file=os.path.basename(path), script=script, note=note)
        b = run(from_folder(model), f"folder.{model}", model)
        META[f"single.{model}"]["max_abs_vs_folder"] = float(abs(a - b).max())
        print(model, "single file vs folder max abs", float(abs(a - b).max()), flush=True)
    json.dump(manifests, open(f"{OUT}/single_files.json", "w"), indent=0)


# ---------------------------------------------------------------------------------------------
# LoRAs

GEN = torch.Generator("cpu").manual_seed(20261207)


def rand(*shape, std):
    return (torch.randn(*shape, generator=GEN) * std).contiguous()


def lora_pair(weight, rank, conv_kernel=None):
    """down (rank x in [x k x k]) and up (out x rank [x 1 x 1]) for a weight of shape (out, in, ...),
    sized so the delta is a few percent of the weight."""
    out_f, in_f = weight.shape[0], weight.shape[1]
    if weight.ndim == 4:
        k = conv_kernel or weight.shape[2]
        down = rand(rank, in_f, k, k, std=1.0 / (in_f * k * k) ** 0.5)
        up = rand(out_f, rank, 1, 1, std=0.15 / rank ** 0.5)
    else:
        down = rand(rank, in_f, std=1.0 / in_f ** 0.5)
        up = rand(out_f, rank, std=0.15 / rank ** 0.5)
    return down, up


def unet_targets(unet, convs=False):
    """diffusers names of the UNet weights a LoRA adapts: the transformer blocks' linears and
    proj_in/out (attention LoRA), and with convs the resnets' 3x3 convs (LoCon)."""
    names = []
    for n, m in unet.named_modules():
        if ".attentions." in n and isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and (
                ".transformer_blocks." in n or n.endswith((".proj_in", ".proj_out"))):
            names.append(n)
        if convs and ".resnets." in n and n.endswith((".conv1", ".conv2")):
            names.append(n)
    return names


def te_targets(te):
    return [n for n, m in te.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in n]


def kohya(prefix, module):
    return prefix + module.replace(".", "_")


def sgm_name(module, layers_per_block):
    """kohya-ss SDXL files name the UNet in the original layout: input_blocks / middle_block /
    output_blocks (the inverse of what diffusers' _maybe_map_sgm_blocks_to_diffusers reads)."""
    p = module.split(".")
    if p[0] == "down_blocks":
        b, kind, j = int(p[1]), p[2], int(p[3])
        idx = 1 + b * (layers_per_block + 1) + j
        return ["input_blocks", str(idx), "1" if kind == "attentions" else "0"] + p[4:]
    if p[0] == "up_blocks":
        b, kind, j = int(p[1]), p[2], int(p[3])
        idx = b * (layers_per_block + 1) + j
        return ["output_blocks", str(idx), "1" if kind == "attentions" else "0"] + p[4:]
    if p[0] == "mid_block":
        kind, j = p[1], int(p[2])
        return ["middle_block", "1" if kind == "attentions" else str(2 * j)] + p[3:]
    raise ValueError(module)


def make_lora(model_parts, fmt, rank, alpha, path, layers_per_block=None):
    """Writes one LoRA file; returns its deltas as {(component, diffusers param name): (down, up,
    alpha/rank)} for the float64 merge. model_parts: [(component, module, names)]."""
    sd, deltas = {}, {}
    for comp, mod, names in model_parts:
        params = dict(mod.named_parameters())
        for n in names:
            w = params[n + ".weight"]
            down, up = lora_pair(w, rank)
            if comp.startswith("text_encoder"):  # kohya names CLIP from text_model. on
                n = "text_model." + n.removeprefix("text_model.")
            deltas[(comp, n + ".weight")] = (down, up, alpha / rank)
            if fmt == "kohya":
                pre = {"unet": "lora_unet_", "text_encoder": "lora_te1_" if any(
                    c == "text_encoder_2" for c, _, _ in model_parts) else "lora_te_",
                       "text_encoder_2": "lora_te2_"}[comp]
                base = kohya(pre, n)
            elif fmt == "kohya_sgm":
                base = kohya("lora_unet_", ".".join(sgm_name(n, layers_per_block)))
            elif fmt == "peft":
                base = f"{comp}.{n}"
            else:
                raise ValueError(fmt)
            if fmt == "peft":
                sd[base + ".lora_A.weight"], sd[base + ".lora_B.weight"] = down, up
            else:
                sd[base + ".lora_down.weight"], sd[base + ".lora_up.weight"] = down, up
                sd[base + ".alpha"] = torch.tensor(float(alpha))
    save_file(sd, path)
    return deltas


def merge_float64(root, deltas_scales):
    """Independent reference: W + sum(scale * alpha/rank * up @ down) in float64, rounded once."""
    files = {"unet": "unet/diffusion_pytorch_model.safetensors", "text_encoder": "text_encoder/model.safetensors",
             "text_encoder_2": "text_encoder_2/model.safetensors",
             "transformer": "transformer/diffusion_pytorch_model.safetensors"}
    by_comp = {}
    for deltas, scale in deltas_scales:
        for (comp, name), d in deltas.items():
            by_comp.setdefault(comp, []).append((name, d, scale))
    for comp, items in by_comp.items():
        path = f"{root}/{files[comp]}"
        sd = load_file(path)
        acc = {}
        for name, (down, up, ar), scale in items:
            key = name if name in sd else name.removeprefix("text_model.")
            if key not in sd:
                key = "text_model." + name
            w = acc.get(key, sd[key].double())
            if down.ndim == 4:
                delta = (up.double().flatten(1) @ down.double().flatten(1)).reshape(w.shape)
            else:
                delta = up.double() @ down.double()
            acc[key] = w + scale * ar * delta
        for key, w in acc.items():
            sd[key] = w.to(sd[key].dtype)
        save_file(sd, path)


def have_peft():
    try:
        import peft  # noqa: F401
        return True
    except ImportError:
        return False


def lora_run(name, model, loras, merged=False):
    """loras: [(file, deltas, scale)]. diffusers loads the files (set_adapters with the scales),
    or with merged=True the float64 merge of the deltas into a copy of the folder is run."""
    files = [os.path.basename(f) for f, _, _ in loras]
    scales = [s for _, _, s in loras]
    if merged or not have_peft():
        root = f"{TMP}/{name}-merged"
        shutil.copytree(folder(model), root, symlinks=False)
        merge_float64(root, [(d, s) for _, d, s in loras])
        run(from_folder(model, root), name, model, loras=files, scales=scales, how="float64 merge")
        return
    pipe = from_folder(model)
    for i, (f, _, _) in enumerate(loras):
        pipe.load_lora_weights(f, adapter_name=f"l{i}")
    pipe.set_adapters([f"l{i}" for i in range(len(loras))], scales)
    run(pipe, name, model, loras=files, scales=scales, how="load_lora_weights + set_adapters")


def flux_lora(transformer, fmt, rank, alpha, path):
    """A FLUX LoRA in BFL module names, kohya-ss style (lora_unet_double_blocks_0_img_attn_qkv) or
    ComfyUI's (diffusion_model.double_blocks.0.img_attn.qkv), with lora_down/up/alpha. The deltas
    are returned in diffusers names: a fused BFL linear (qkv, linear1) splits its up rows."""
    cfg = transformer.config
    dim = cfg.num_attention_heads * cfg.attention_head_dim
    mlp = int(dim * 4.0)
    params = dict(transformer.named_parameters())
    sd, deltas = {}, {}

    def add(bfl, in_f, parts):
        down = rand(rank, in_f, std=1.0 / in_f ** 0.5)
        out_f = sum(o for _, o in parts)
        up = rand(out_f, rank, std=0.15 / rank ** 0.5)
        base = ("lora_unet_" + bfl.replace(".", "_")) if fmt == "kohya" else "diffusion_model." + bfl
        sd[base + ".lora_down.weight"], sd[base + ".lora_up.weight"] = down, up
        sd[base + ".alpha"] = torch.tensor(float(alpha))
        row = 0
        for name, o in parts:
            assert params[name].shape == (o, in_f), (name, params[name].shape, o, in_f)
            deltas[("transformer", name)] = (down, up[row:row + o], alpha / rank)
            row += o

    for i in range(cfg.num_layers):
        d = f"transformer_blocks.{i}"
        add(f"double_blocks.{i}.img_attn.qkv", dim, [(f"{d}.attn.to_{x}.weight", dim) for x in "qkv"])
        add(f"double_blocks.{i}.txt_attn.qkv", dim,
            [(f"{d}.attn.add_{x}_proj.weight", dim) for x in "qkv"])
        add(f"double_blocks.{i}.img_attn.proj", dim, [(f"{d}.attn.to_out.0.weight", dim)])
        add(f"double_blocks.{i}.txt_attn.proj", dim, [(f"{d}.attn.to_add_out.weight", dim)])
        add(f"double_blocks.{i}.img_mlp.0", dim, [(f"{d}.ff.net.0.proj.weight", mlp)])
        add(f"double_blocks.{i}.img_mlp.2", mlp, [(f"{d}.ff.net.2.weight", dim)])
        add(f"double_blocks.{i}.txt_mlp.0", dim, [(f"{d}.ff_context.net.0.proj.weight", mlp)])
        add(f"double_blocks.{i}.txt_mlp.2", mlp, [(f"{d}.ff_context.net.2.weight", dim)])
        add(f"double_blocks.{i}.img_mod.lin", dim, [(f"{d}.norm1.linear.weight", 6 * dim)])
        add(f"double_blocks.{i}.txt_mod.lin", dim, [(f"{d}.norm1_context.linear.weight", 6 * dim)])
    for i in range(cfg.num_single_layers):
        s = f"single_transformer_blocks.{i}"
        add(f"single_blocks.{i}.linear1", dim,
            [(f"{s}.attn.to_{x}.weight", dim) for x in "qkv"] + [(f"{s}.proj_mlp.weight", mlp)])
        add(f"single_blocks.{i}.linear2", dim + mlp, [(f"{s}.proj_out.weight", dim)])
        add(f"single_blocks.{i}.modulation.lin", dim, [(f"{s}.norm.linear.weight", 3 * dim)])
    save_file(sd, path)
    return deltas


def loras():
    L = f"{OUT}/lora"
    sd15 = from_folder("sd15-tiny")
    kohya_u = make_lora([("unet", sd15.unet, unet_targets(sd15.unet))], "kohya", 4, 2.0, f"{L}/sd15_kohya.safetensors")
    locon = make_lora([("unet", sd15.unet, unet_targets(sd15.unet, convs=True))], "kohya", 4, 4.0,
                      f"{L}/sd15_locon.safetensors")
    peft_u = make_lora([("unet", sd15.unet, unet_targets(sd15.unet))], "peft", 8, 8.0, f"{L}/sd15_peft.safetensors")
    te_u = make_lora([("unet", sd15.unet, unet_targets(sd15.unet)[:6]),
                      ("text_encoder", sd15.text_encoder, te_targets(sd15.text_encoder))], "kohya", 4, 1.0,
                     f"{L}/sd15_kohya_te.safetensors")
    lora_run("lora.sd15_kohya", "sd15-tiny", [(f"{L}/sd15_kohya.safetensors", kohya_u, 0.8)])
    lora_run("lora.sd15_locon", "sd15-tiny", [(f"{L}/sd15_locon.safetensors", locon, 1.0)])
    lora_run("lora.sd15_peft", "sd15-tiny", [(f"{L}/sd15_peft.safetensors", peft_u, 1.0)])
    lora_run("lora.sd15_two", "sd15-tiny", [(f"{L}/sd15_kohya.safetensors", kohya_u, 0.6),
                                            (f"{L}/sd15_peft.safetensors", peft_u, 0.5)])
    lora_run("lora.sd15_kohya_te", "sd15-tiny", [(f"{L}/sd15_kohya_te.safetensors", te_u, 1.0)], merged=True)

    xl = from_folder("sdxl-tiny")
    lpb = xl.unet.config.layers_per_block
    sgm = make_lora([("unet", xl.unet, unet_targets(xl.unet))], "kohya_sgm", 4, 2.0, f"{L}/sdxl_kohya_sgm.safetensors",
                    layers_per_block=lpb)
    lora_run("lora.sdxl_kohya_sgm", "sdxl-tiny", [(f"{L}/sdxl_kohya_sgm.safetensors", sgm, 1.0)])

    fx = from_folder("flux-tiny")
    fk = flux_lora(fx.transformer, "kohya", 4, 2.0, f"{L}/flux_kohya.safetensors")
    fc = flux_lora(fx.transformer, "comfy", 4, 4.0, f"{L}/flux_comfy.safetensors")
    # diffusers' kohya FLUX conversion (ComfyUI files go through it too) splits linear1 at the real
    # FLUX widths (3072, 12288: an assertion), so at the tiny width the reference is the float64 merge
    lora_run("lora.flux_kohya", "flux-tiny", [(f"{L}/flux_kohya.safetensors", fk, 1.0)], merged=True)
    lora_run("lora.flux_comfy", "flux-tiny", [(f"{L}/flux_comfy.safetensors", fc, 0.8)], merged=True)
    # the same LoRAs merged by the float64 script: how far diffusers' own loading is from it
    for name, model, items in [("merged.sd15_two", "sd15-tiny", [(f"{L}/sd15_kohya.safetensors", kohya_u, 0.6),
                                                                   (f"{L}/sd15_peft.safetensors", peft_u, 0.5)])]:
        lora_run(name, model, items, merged=True)
        other = "lora." + name.split(".", 1)[1]
        if other in META and META[other].get("how", "").startswith("load_lora"):
            diff = float((TENSORS[f"{name}.image"] - TENSORS[f"{other}.image"]).abs().max())
            META[name]["max_abs_vs_diffusers_lora"] = diff
            print(name, "float64 merge vs diffusers LoRA max abs", diff, flush=True)


if __name__ == "__main__":
    parts = os.environ.get("PARTS", "single,lora").split(",")
    if "single" in parts:
        single_files()
    if "lora" in parts:
        loras()
    save_file(TENSORS, f"{OUT}/file_runs.safetensors")
    META["_versions"] = dict(diffusers=diffusers.__version__, torch=torch.__version__,
                             transformers=__import__("transformers").__version__, peft=have_peft())
    json.dump(META, open(f"{OUT}/file_runs.json", "w"), indent=1, default=str)
    shutil.rmtree(TMP)
