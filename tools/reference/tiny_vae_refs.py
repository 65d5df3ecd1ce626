"""References for the tiny autoencoder (diffusers' AutoencoderTiny: taesd, taesdxl, taesd3, taef1) on
small random configs, recorded by diffusers itself:

    PYTHONPATH=path/to/diffusers/src python3 tools/reference/tiny_vae_refs.py OUTDIR

OUTDIR/taesd-tiny and OUTDIR/taesd3-tiny are diffusers folders (config.json +
diffusion_pytorch_model.safetensors; 4 and 16 latent channels, 8 channels wide, the released block
counts). OUTDIR/tiny_vae_refs.safetensors holds, for each: a latent (randn, seed 1) and its decode,
an image in [-1, 1] and its encode; and sd15-tiny's StableDiffusionPipeline run with vae=taesd-tiny
(the run tests/fixtures' other references use: 4 steps, 64x64, seed 7), image and final latents.
OUTDIR/tiny_vae_refs.json says what each tensor is."""
import json
import sys

import torch
from safetensors.torch import save_file

from diffusers import AutoencoderTiny, StableDiffusionPipeline

torch.set_grad_enabled(False)
OUT = sys.argv[1]
T, META = {}, {}

CONFIGS = {
    # taesd / taesdxl: 4 latent channels, scaling 1.0 (the pipeline's own factor is not used by
    # AutoencoderTiny's config: the pipeline divides by vae.config.scaling_factor).
    "taesd-tiny": dict(latent_channels=4, scaling_factor=1.0, shift_factor=0.0),
    # taesd3 / taef1: 16 latent channels with the SD3 VAE's scaling and shift, as madebyollin's
    # taesd3 config sets them.
    "taesd3-tiny": dict(latent_channels=16, scaling_factor=1.5305, shift_factor=0.0609),
}

for name, cfg in CONFIGS.items():
    torch.manual_seed(0)
    vae = AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                          **cfg).eval()
    # Default init leaves the deep ReLU stack's outputs near zero; widen the weights so the decode
    # uses the whole [-1, 1] range (the test is then sensitive to every layer).
    for p in vae.parameters():
        p.mul_(1.7)
    vae.save_pretrained(f"{OUT}/{name}", safe_serialization=True)
    c = cfg["latent_channels"]
    g = torch.Generator("cpu").manual_seed(1)
    lat = torch.randn(1, c, 8, 12, generator=g)
    dec = vae.decode(lat).sample
    img = torch.rand(1, 3, 48, 40, generator=g) * 2 - 1
    enc = vae.encode(img).latents
    T[f"{name}.latent"], T[f"{name}.decoded"] = lat.contiguous(), dec.contiguous()
    T[f"{name}.image"], T[f"{name}.encoded"] = img.contiguous(), enc.contiguous()
    META[name] = dict(config=dict(vae.config), decoded_range=[dec.min().item(), dec.max().item()],
                      encoded_range=[enc.min().item(), enc.max().item()])
    print(name, META[name]["decoded_range"], META[name]["encoded_range"], flush=True)

pipe = StableDiffusionPipeline.from_pretrained("tests/fixtures/sd15-tiny/pipeline", safety_checker=None,
                                               torch_dtype=torch.float32)
pipe.vae = AutoencoderTiny.from_pretrained(f"{OUT}/taesd-tiny", torch_dtype=torch.float32)
last = {}


def on_step(p, i, t, kw):
    last["latents"] = kw["latents"].clone()
    return kw


call = dict(prompt="a lighthouse at dawn, oil painting", negative_prompt="blurry", num_inference_steps=4,
            guidance_scale=7.5, height=64, width=64)
img = pipe(**call, generator=torch.Generator("cpu").manual_seed(7), output_type="np",
           callback_on_step_end=on_step).images
T["sd15_taesd.image"] = torch.from_numpy(img).contiguous()
T["sd15_taesd.latents"] = last["latents"].contiguous()
META["sd15_taesd"] = dict(call, seed=7, model="sd15-tiny", vae="taesd-tiny",
                          scheduler_class=type(pipe.scheduler).__name__)
save_file(T, f"{OUT}/tiny_vae_refs.safetensors")
json.dump(META, open(f"{OUT}/tiny_vae_refs.json", "w"), indent=1, default=str)
print("ok", {k: list(v.shape) for k, v in T.items()})
