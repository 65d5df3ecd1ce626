"""Independent references for the tiny autoencoder (AutoencoderTiny: taesd, taesdxl, taesd3, taef1),
for machines without diffusers: a plain torch re-implementation of diffusers' EncoderTiny /
DecoderTiny / AutoencoderTinyBlock (diffusers' models/autoencoders/vae.py and
unets/unet_2d_blocks.py, read for their structure; no diffusers code is imported or copied), with
random weights under diffusers' parameter names:

    /usr/bin/python3 tools/reference/tiny_vae_torch.py tests/fixtures/extra

Writes the same files, with the same tensor names, as tools/reference/tiny_vae_refs.py (which
records them through diffusers itself and may later replace them): OUTDIR/taesd-tiny and
OUTDIR/taesd3-tiny (diffusers folders: config.json + diffusion_pytorch_model.safetensors),
OUTDIR/tiny_vae_refs.safetensors (per model: `.latent` randn (1, C, 8, 12) and `.decoded`,
`.image` in [-1, 1] (1, 3, 48, 40) and `.encoded`; NCHW float32) and OUTDIR/tiny_vae_refs.json.
The sd15_taesd pipeline run only diffusers can record; this script leaves it out, and records
instead `sd15_euler_taesd.image`: the final latents diffusers recorded for sd15-tiny's `euler`
run (tests/fixtures/sd15-tiny/expected/euler.safetensors, latents_steps[-1]; the VAE plays no part
in a text-to-image trajectory) decoded by taesd-tiny as StableDiffusionPipeline decodes them
(latents / scaling_factor, then (x / 2 + 0.5).clamp(0, 1), NHWC), the image `gen --vae-tiny`
must give for that run.

Needs torch and numpy only (Debian's python3-torch); the safetensors files are written by hand
(8-byte little-endian header length, JSON header, raw little-endian data)."""
import json
import os
import struct
import sys

import numpy as np
import torch
from torch import nn

torch.set_grad_enabled(False)


class TinyBlock(nn.Module):
    """AutoencoderTinyBlock(c, c, "relu"): fuse(conv(x) + skip(x)), skip the identity as in == out."""

    def __init__(self, c):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1),
                                  nn.ReLU(), nn.Conv2d(c, c, 3, padding=1))
        self.skip = nn.Identity()
        self.fuse = nn.ReLU()

    def forward(self, x):
        return self.fuse(self.conv(x) + self.skip(x))


class Encoder(nn.Module):
    """EncoderTiny: per stage a conv (the first from the image, later ones stride 2 without bias),
    then the stage's blocks; a last conv to the latent channels. Input mapped from [-1, 1] to [0, 1]."""

    def __init__(self, cin, cout, blocks, ch):
        super().__init__()
        layers = []
        for i, n in enumerate(blocks):
            if i == 0:
                layers.append(nn.Conv2d(cin, ch[i], 3, padding=1))
            else:
                layers.append(nn.Conv2d(ch[i], ch[i], 3, padding=1, stride=2, bias=False))
            layers += [TinyBlock(ch[i]) for _ in range(n)]
        layers.append(nn.Conv2d(ch[-1], cout, 3, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x.add(1).div(2))


class Decoder(nn.Module):
    """DecoderTiny: tanh(z / 3) * 3, a conv and ReLU, then per stage its blocks, a nearest 2x
    upsample (not after the last) and a conv (bias only on the last, to the image channels);
    output mapped from [0, 1] to [-1, 1]."""

    def __init__(self, cin, cout, blocks, ch):
        super().__init__()
        layers = [nn.Conv2d(cin, ch[0], 3, padding=1), nn.ReLU()]
        for i, n in enumerate(blocks):
            last = i == len(blocks) - 1
            layers += [TinyBlock(ch[i]) for _ in range(n)]
            if not last:
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            layers.append(nn.Conv2d(ch[i], cout if last else ch[i], 3, padding=1, bias=last))
        self.layers = nn.Sequential(*layers)

    def forward(self, z):
        return self.layers(torch.tanh(z / 3) * 3).mul(2).sub(1)


class Tiny(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.encoder = Encoder(cfg["in_channels"], cfg["latent_channels"], cfg["num_encoder_blocks"],
                               cfg["encoder_block_out_channels"])
        self.decoder = Decoder(cfg["latent_channels"], cfg["out_channels"], cfg["num_decoder_blocks"],
                               cfg["decoder_block_out_channels"])


def load_safetensors(path, name):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        t = header[name]
        assert t["dtype"] == "F32", t
        b, e = t["data_offsets"]
        f.seek(8 + n + b)
        return torch.from_numpy(np.frombuffer(f.read(e - b), dtype="<f4").copy()).reshape(t["shape"])


def save_safetensors(path, tensors):
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name, t in tensors.items():
        a = np.ascontiguousarray(t.detach().numpy().astype("<f4"))
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def config(latent_channels, scaling_factor, shift_factor):
    ch = [8, 8, 8, 8]
    return {"_class_name": "AutoencoderTiny", "_diffusers_version": "0.36.0",
            "act_fn": "relu", "block_out_channels": ch, "decoder_block_out_channels": ch,
            "encoder_block_out_channels": ch, "force_upcast": False, "in_channels": 3,
            "latent_channels": latent_channels, "latent_magnitude": 3, "latent_shift": 0.5,
            "num_decoder_blocks": [3, 3, 3, 1], "num_encoder_blocks": [1, 3, 3, 3], "out_channels": 3,
            "scaling_factor": scaling_factor, "shift_factor": shift_factor, "upsample_fn": "nearest",
            "upsampling_scaling_factor": 2}


# The released shapes (block counts) at 8 channels; scaling as tiny_vae_refs.py sets them.
CONFIGS = {
    "taesd-tiny": config(4, 1.0, 0.0),
    "taesd3-tiny": config(16, 1.5305, 0.0609),
}
# torch's default init leaves the deep ReLU stack's output near zero; every weight is widened by
# this factor (as tiny_vae_refs.py does), then the decoder's last conv is set so that the reference
# decode spans [-0.9, 0.9] (fit_output): every layer then shows in the comparison and the 8-bit
# image uses most levels.
WIDEN = 1.7


def fit_output(vae, lat):
    """Scales and shifts the decoder's last conv (weight * a, bias * a + b) so that the decode of
    `lat` spans [-0.9, 0.9]: its output before mul(2).sub(1) then spans [0.05, 0.95]."""
    last = vae.decoder.layers[-1]
    y = (vae.decoder(lat) + 1) / 2
    a = 0.9 / (y.max() - y.min()).item()
    b = 0.05 - a * y.min().item()
    last.weight.mul_(a)
    last.bias.mul_(a).add_(b)


def main(out):
    T, META = {}, {}
    for name, cfg in CONFIGS.items():
        torch.manual_seed(0)
        vae = Tiny(cfg).eval()
        for p in vae.parameters():
            p.mul_(WIDEN)
        g = torch.Generator("cpu").manual_seed(1)
        lat = torch.randn(1, cfg["latent_channels"], 8, 12, generator=g)
        fit_output(vae, lat)
        os.makedirs(f"{out}/{name}", exist_ok=True)
        save_safetensors(f"{out}/{name}/diffusion_pytorch_model.safetensors", vae.state_dict())
        with open(f"{out}/{name}/config.json", "w") as f:
            json.dump(cfg, f, indent=2, sort_keys=True)
            f.write("\n")
        dec = vae.decoder(lat)
        img = torch.rand(1, 3, 48, 40, generator=g) * 2 - 1
        enc = vae.encoder(img)
        T[f"{name}.latent"], T[f"{name}.decoded"] = lat.contiguous(), dec.contiguous()
        T[f"{name}.image"], T[f"{name}.encoded"] = img.contiguous(), enc.contiguous()
        META[name] = dict(config=cfg, decoded_range=[dec.min().item(), dec.max().item()],
                          encoded_range=[enc.min().item(), enc.max().item()],
                          recorded_by="tools/reference/tiny_vae_torch.py (plain torch %s)" % torch.__version__)
        print(name, META[name]["decoded_range"], META[name]["encoded_range"], flush=True)
        if name == "taesd-tiny":
            run = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../tests/fixtures/"
                               "sd15-tiny/expected/euler.safetensors")
            final = load_safetensors(run, "latents_steps")[-1]
            x = vae.decoder(final / cfg["scaling_factor"])
            T["sd15_euler_taesd.image"] = (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).contiguous()
            META["sd15_euler_taesd"] = dict(model="sd15-tiny", run="euler", vae="taesd-tiny",
                                            latents="expected/euler.safetensors latents_steps[-1]")
    save_safetensors(f"{out}/tiny_vae_refs.safetensors", T)
    with open(f"{out}/tiny_vae_refs.json", "w") as f:
        json.dump(META, f, indent=1)
        f.write("\n")
    print("ok", {k: list(v.shape) for k, v in T.items()})


if __name__ == "__main__":
    main(sys.argv[1])
