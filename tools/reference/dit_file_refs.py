"""What diffusers itself reads from the SD3 / SD3.5 single files and the FLUX.1 BFL transformer files
this project's tests write (tests/sd3_writer.c, tests/bfl_writer.c): run build/tests/test_sd3_file
and build/tests/test_flux_bfl first (they leave the files under build/tests/), then

    PYTHONPATH=path/to/diffusers/src python3 tools/reference/dit_file_refs.py OUT.json

For each file: its tensors (name, dtype, shape, CRC-32 of the bytes, so the C test can tell it still
writes exactly these files), and each component diffusers' from_single_file builds from it
(SD3Transformer2DModel, AutoencoderKL, FluxTransformer2DModel with config= the fixture folder)
compared with the same component from the fixture folder: every parameter equal, bit for bit.
"""
import json
import sys
import zlib

import torch
from safetensors import safe_open

from diffusers import AutoencoderKL, FluxTransformer2DModel, SD3Transformer2DModel

FIX = "tests/fixtures"
torch.set_grad_enabled(False)


def manifest(path):
    out = []
    with safe_open(path, "pt") as f:
        for k in sorted(f.keys()):
            t = f.get_tensor(k).contiguous()
            raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
            out.append([k, str(t.dtype).replace("torch.", ""), list(t.shape), zlib.crc32(raw)])
    return out


def compare(cls, path, model, subfolder):
    folder = f"{FIX}/{model}/pipeline"
    a = cls.from_single_file(path, config=folder, subfolder=subfolder, torch_dtype=torch.float32)
    b = cls.from_pretrained(folder, subfolder=subfolder, torch_dtype=torch.float32)
    sa, sb = a.state_dict(), b.state_dict()
    missing = sorted(set(sb) - set(sa))
    differ = sorted(k for k in sb if k in sa and not torch.equal(sa[k], sb[k]))
    print(path, cls.__name__, "missing", len(missing), "differ", len(differ), differ[:5], flush=True)
    return dict(component=subfolder, cls=cls.__name__, params=len(sb), missing=missing[:20],
                differ=differ[:20], equal=not missing and not differ)


FILES = [
    ("sd3.safetensors", "build/tests/sd3_file/sd3.safetensors", "sd3-tiny",
     [(SD3Transformer2DModel, "transformer"), (AutoencoderKL, "vae")]),
    ("sd35.safetensors", "build/tests/sd3_file/sd35.safetensors", "sd35-tiny",
     [(SD3Transformer2DModel, "transformer"), (AutoencoderKL, "vae")]),
    ("flux1-tiny.safetensors", "build/tests/flux_bfl/flux1-tiny.safetensors", "flux-tiny",
     [(FluxTransformer2DModel, "transformer")]),
]

if __name__ == "__main__":
    out = {}
    for name, path, model, parts in FILES:
        out[name] = dict(model=model, tensors=manifest(path),
                         components=[compare(cls, path, model, sub) for cls, sub in parts])
    json.dump(out, open(sys.argv[1], "w"), separators=(",", ":"))
