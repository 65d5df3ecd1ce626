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

def flux_converter_for_any_width():
    """diffusers' convert_flux_transformer_checkpoint_to_diffusers fixes inner_dim = 3072 (FLUX.1's
    width), so it cannot convert flux-tiny's BFL file. Run diffusers' own function with that one
    line changed to read the width from the file (img_in's output rows); every other line is
    diffusers' code, as loaded from the source."""
    import inspect

    from diffusers.loaders import single_file_model, single_file_utils

    src = inspect.getsource(single_file_utils.convert_flux_transformer_checkpoint_to_diffusers)
    assert src.count("inner_dim = 3072") == 1, "diffusers' FLUX converter changed: revisit this patch"
    src = src.replace("inner_dim = 3072", 'inner_dim = checkpoint["img_in.weight"].shape[0]')
    scope = dict(vars(single_file_utils))
    exec(compile(src, single_file_utils.__file__, "exec"), scope)
    fn = scope["convert_flux_transformer_checkpoint_to_diffusers"]
    single_file_model.SINGLE_FILE_LOADABLE_CLASSES["FluxTransformer2DModel"]["checkpoint_mapping_fn"] = fn


if __name__ == "__main__":
    flux_converter_for_any_width()
    out = {}
    for name, path, model, parts in FILES:
        out[name] = dict(model=model, tensors=manifest(path),
                         components=[compare(cls, path, model, sub) for cls, sub in parts])
    json.dump(out, open(sys.argv[1], "w"), separators=(",", ":"))
