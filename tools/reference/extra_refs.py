"""Extra reference data recorded by diffusers itself, for behaviour the shared fixtures do not cover.

Run on a machine with torch + transformers, with diffusers' source on PYTHONPATH:
    PYTHONPATH=path/to/diffusers/src python3 tools/reference/extra_refs.py OUTDIR
Writes OUTDIR/extra_runs.safetensors + extra_runs.json (pipeline runs at latent sizes that are not
multiples of 8, in the layout of tests/fixtures/*/expected) and OUTDIR/schedulers_extra.safetensors +
schedulers_extra.json (scheduler options beyond tests/fixtures/schedulers.json, under the same
synthetic model). Everything runs in float32 on the CPU, as the shared fixtures were made.
"""
import json
import os
import math
import sys

import torch
from safetensors.torch import load_file, save_file

import PIL.Image

import diffusers
from diffusers import (StableDiffusion3Pipeline, StableDiffusionImg2ImgPipeline, StableDiffusionPipeline,
                       StableDiffusionXLImg2ImgPipeline, StableDiffusionXLInpaintPipeline)

OUT = sys.argv[1]
FIX = "tests/fixtures"
SD3_TINY = os.environ.get("SD3_TINY", f"{FIX}/sd3-tiny/pipeline")  # a complete sd3-tiny pipeline folder
torch.set_grad_enabled(False)


def record_run(pipe, name, tensors, meta, **call):
    """One pipeline call with every intermediate recorded (names as in the shared fixtures). The
    denoiser's conditioning at its first call is recorded too: `context` (encoder_hidden_states,
    CFG batch), and for SDXL / SD3 `pooled` and `time_ids`."""
    inputs, outputs, ts, steps, first = [], [], [], [], {}
    model = pipe.unet if hasattr(pipe, "unet") and pipe.unet is not None else pipe.transformer
    forward = model.forward

    def hooked(*a, **k):
        out = forward(*a, **k)
        sample = a[0] if a else k.get("sample", k.get("hidden_states"))
        t = a[1] if len(a) > 1 else k.get("timestep")
        inputs.append(sample.clone())
        outputs.append(out[0].clone() if isinstance(out, tuple) else out.sample.clone())
        ts.append(float(t.flatten()[0]) if torch.is_tensor(t) else float(t))
        if not first:
            first["context"] = k["encoder_hidden_states"].clone()
            added = k.get("added_cond_kwargs") or {}
            if "text_embeds" in added:
                first["pooled"] = added["text_embeds"].clone()
                first["time_ids"] = added["time_ids"].clone()
            if "pooled_projections" in k:
                first["pooled"] = k["pooled_projections"].clone()
        return out

    model.forward = hooked

    def on_step(p, i, t, kw):
        steps.append(kw["latents"].clone())
        return kw

    if isinstance(pipe, (StableDiffusionPipeline, StableDiffusionImg2ImgPipeline)):
        pe, ne = pipe.encode_prompt(call["prompt"], "cpu", 1, call["guidance_scale"] > 1,
                                    call.get("negative_prompt"), clip_skip=call.get("clip_skip"))
        tensors[f"{name}.prompt_embeds"] = pe.contiguous()
        if ne is not None:
            tensors[f"{name}.negative_prompt_embeds"] = ne.contiguous()
    args = {k: v for k, v in call.items() if k not in ("seed", "image_file", "mask_file")}
    if "image_file" in call:
        args["image"] = PIL.Image.open(f"{FIX}/{call['image_file']}").convert("RGB")
    if "mask_file" in call:
        args["mask_image"] = PIL.Image.open(f"{FIX}/{call['mask_file']}")
    g = torch.Generator("cpu").manual_seed(call["seed"])
    img = pipe(**args, generator=g, output_type="np", callback_on_step_end=on_step).images
    model.forward = forward
    for k, v in first.items():
        tensors[f"{name}.{k}"] = v.contiguous()
    tensors[f"{name}.timesteps"] = pipe.scheduler.timesteps.float().contiguous()
    tensors[f"{name}.model_inputs"] = torch.stack(inputs).contiguous()
    tensors[f"{name}.model_outputs"] = torch.stack(outputs).contiguous()
    tensors[f"{name}.model_timesteps"] = torch.tensor(ts, dtype=torch.float32)
    tensors[f"{name}.latents_steps"] = torch.stack(steps).contiguous()
    tensors[f"{name}.image"] = torch.from_numpy(img).contiguous()
    meta[name] = dict(call, pipeline_class=type(pipe).__name__, scheduler_class=type(pipe.scheduler).__name__,
                      scheduler_config=dict(pipe.scheduler.config))


def sd3_with_t5(out_dir):
    """sd3-tiny plus a T5 encoder as text_encoder_3 (random, seeded, d_model = the transformer's
    joint_attention_dim) with flux-tiny's T5 tokenizer: SD3 with T5 present, saved as a folder."""
    from transformers import T5Config, T5EncoderModel, AutoTokenizer
    base = StableDiffusion3Pipeline.from_pretrained(SD3_TINY, torch_dtype=torch.float32,
                                                    text_encoder_3=None, tokenizer_3=None)
    dim = base.transformer.config.joint_attention_dim
    torch.manual_seed(1234)
    cfg = T5Config(vocab_size=700, d_model=dim, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                   relative_attention_num_buckets=8, relative_attention_max_distance=16,
                   feed_forward_proj="gated-gelu", dense_act_fn="gelu_new", is_gated_act=True)
    t5 = T5EncoderModel(cfg).eval()
    for prm in t5.parameters():  # away from the init scheme's tiny values, so T5 matters
        prm.data.normal_(0.0, 0.5)
    tok = AutoTokenizer.from_pretrained(f"{FIX}/flux-tiny/pipeline/tokenizer_2")
    pipe = StableDiffusion3Pipeline(transformer=base.transformer, scheduler=base.scheduler, vae=base.vae,
                                    text_encoder=base.text_encoder, tokenizer=base.tokenizer,
                                    text_encoder_2=base.text_encoder_2, tokenizer_2=base.tokenizer_2,
                                    text_encoder_3=t5, tokenizer_3=tok)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    return StableDiffusion3Pipeline.from_pretrained(out_dir, torch_dtype=torch.float32)


# name, model, scheduler class, scheduler overrides, call arguments
RUNS = [
    ("sd15-tiny.odd", "sd15-tiny", "EulerDiscreteScheduler", {},
     dict(prompt="a photo of an astronaut riding a horse on mars", negative_prompt="blurry", seed=11,
          num_inference_steps=4, guidance_scale=7.5, height=120, width=136)),
    ("sd2v-tiny.odd", "sd2v-tiny", "DDIMScheduler", {},
     dict(prompt="a photo of an astronaut riding a horse on mars", negative_prompt="blurry", seed=11,
          num_inference_steps=4, guidance_scale=7.5, height=72, width=104)),
    ("sd15-tiny.clip_skip", "sd15-tiny", "DPMSolverMultistepScheduler", {"use_karras_sigmas": True},
     dict(prompt="portrait of an old sailor, 35mm", negative_prompt="cartoon", seed=5,
          num_inference_steps=5, guidance_scale=6.0, height=128, width=128, clip_skip=1)),
    ("sd15-tiny.ddim_eta", "sd15-tiny", "DDIMScheduler", {},
     dict(prompt="a watercolor painting of a lighthouse", negative_prompt="", seed=3,
          num_inference_steps=5, guidance_scale=7.5, height=128, width=128, eta=0.7)),
    ("sd2v-tiny.sde_batch2", "sd2v-tiny", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"},
     dict(prompt="a red fox in the snow", negative_prompt="low quality", seed=9,
          num_inference_steps=5, guidance_scale=7.0, height=128, width=128, num_images_per_prompt=2)),
    # img2img of an image whose sides are not multiples of 8: diffusers rounds the size down and
    # resizes with Pillow's LANCZOS (its img2img takes no height/width: the image decides)
    ("sd15-tiny.img2img_resize", "sd15-tiny", "DPMSolverMultistepScheduler", {},
     dict(prompt="a watercolor painting of a lighthouse", negative_prompt="blurry", seed=21,
          num_inference_steps=6, guidance_scale=7.0, strength=0.7,
          image_file="extra/img2img-100x70.png", pipeline="img2img")),
    ("sdxl-tiny.img2img", "sdxl-tiny", "EulerDiscreteScheduler", {},
     dict(prompt="a photo of an astronaut riding a horse on mars", negative_prompt="blurry", seed=4,
          num_inference_steps=6, guidance_scale=5.0, strength=0.6,
          image_file="sd15-tiny/expected/img2img-image.png", pipeline="sdxl_img2img")),
    ("sdxl-tiny.inpaint", "sdxl-tiny", "EulerDiscreteScheduler", {},
     dict(prompt="a red door", seed=6, num_inference_steps=6, guidance_scale=5.0,
          image_file="sd15-tiny/expected/inpaint-image.png",
          mask_file="sd15-tiny/expected/inpaint-mask_image.png", pipeline="sdxl_inpaint")),
    ("sd3t5-tiny.t5", "sd3t5-tiny", "FlowMatchEulerDiscreteScheduler", {},
     dict(prompt="a photo of an astronaut riding a horse on mars", negative_prompt="blurry", seed=8,
          num_inference_steps=4, guidance_scale=7.0, height=128, width=128, max_sequence_length=32,
          pipeline="sd3")),
]


def pipeline_runs():
    tensors, meta = {}, {}
    # ONLY=name,name records just those runs and merges them into the committed files (the other
    # runs are copied over unchanged), so one new case costs one run on the device.
    only = [n for n in os.environ.get("ONLY", "").split(",") if n]
    if only:
        tensors = load_file(f"{FIX}/extra/extra_runs.safetensors")
        meta = json.load(open(f"{FIX}/extra/extra_runs.json"))
        for n in only:
            meta.pop(n, None)
            for k in [k for k in tensors if k.startswith(n + ".")]:
                del tensors[k]
    # an input whose sides are not multiples of 8, made once from a fixture image
    src = PIL.Image.open(f"{FIX}/sd15-tiny/expected/img2img_euler_nonsquare-image.png").convert("RGB")
    src.resize((100, 70), PIL.Image.BICUBIC).save(f"{FIX}/extra/img2img-100x70.png")
    import shutil
    shutil.copy(f"{FIX}/extra/img2img-100x70.png", f"{OUT}/img2img-100x70.png")
    sd3t5 = None
    for name, model, sched, overrides, call in RUNS:
        if only and name not in only:
            continue
        kind = call.pop("pipeline", "sd")
        if kind == "sd3":
            sd3t5 = sd3t5 or sd3_with_t5(f"{OUT}/sd3t5-tiny")
            pipe = sd3t5
        else:
            cls = {"sd": StableDiffusionPipeline, "img2img": StableDiffusionImg2ImgPipeline,
                   "sdxl_img2img": StableDiffusionXLImg2ImgPipeline,
                   "sdxl_inpaint": StableDiffusionXLInpaintPipeline}[kind]
            extra = {"safety_checker": None} if kind in ("sd", "img2img") else {}
            pipe = cls.from_pretrained(f"{FIX}/{model}/pipeline", torch_dtype=torch.float32, **extra)
        pipe.scheduler = getattr(diffusers, sched).from_config(pipe.scheduler.config, **overrides)
        if getattr(pipe, "text_encoder", None) is not None and not hasattr(pipe.text_encoder, "text_model"):
            # transformers 5's CLIPTextModel has no .text_model, which diffusers' clip_skip path
            # still reaches for (text_model.final_layer_norm): point it at the model itself.
            object.__setattr__(pipe.text_encoder, "text_model", pipe.text_encoder)
        record_run(pipe, name, tensors, meta, **call)
        meta[name]["model"] = model
        meta[name]["scheduler_overrides"] = overrides
    save_file(tensors, f"{OUT}/extra_runs.safetensors")
    json.dump(meta, open(f"{OUT}/extra_runs.json", "w"), indent=1, default=str)
    if sd3t5 is not None:  # one file back: the folder as a tarball
        import tarfile
        with tarfile.open(f"{OUT}/sd3t5-tiny.tar", "w") as tar:
            tar.add(f"{OUT}/sd3t5-tiny", arcname="sd3t5-tiny")
        import shutil
        shutil.rmtree(f"{OUT}/sd3t5-tiny")


BASE = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
CASES = [
    ("PNDMScheduler", dict(BASE, skip_prk_steps=False, steps_offset=1, set_alpha_to_one=False), {}),
    ("DPMSolverMultistepScheduler", dict(BASE, solver_order=3), {}),
    ("DPMSolverMultistepScheduler", dict(BASE, algorithm_type="dpmsolver"), {}),
    ("DPMSolverMultistepScheduler", dict(BASE, solver_type="heun"), {}),
    ("DPMSolverMultistepScheduler", dict(BASE, use_lu_lambdas=True), {}),
    ("DPMSolverMultistepScheduler", dict(BASE, use_exponential_sigmas=True), {}),
    ("DPMSolverMultistepScheduler", dict(BASE, euler_at_final=True, final_sigmas_type="sigma_min"), {}),
    ("DPMSolverMultistepScheduler", dict(BASE, algorithm_type="sde-dpmsolver++", use_karras_sigmas=True), {}),
    ("DPMSolverMultistepScheduler", dict(BASE, timestep_spacing="trailing", rescale_betas_zero_snr=True,
                                         prediction_type="v_prediction"), {}),
    ("UniPCMultistepScheduler", dict(BASE, solver_type="bh1"), {}),
    ("UniPCMultistepScheduler", dict(BASE, solver_order=3), {}),
    ("UniPCMultistepScheduler", dict(BASE, predict_x0=False), {}),
    ("UniPCMultistepScheduler", dict(BASE, disable_corrector=[0]), {}),
    ("UniPCMultistepScheduler", dict(BASE, use_karras_sigmas=True), {}),
    ("DDPMScheduler", dict(BASE, variance_type="fixed_small_log"), {}),
    ("DDPMScheduler", dict(BASE, variance_type="fixed_large"), {}),
    ("DDPMScheduler", dict(BASE, prediction_type="v_prediction", clip_sample=True), {}),
    ("EulerDiscreteScheduler", dict(BASE, use_exponential_sigmas=True), {}),
    ("EulerDiscreteScheduler", dict(BASE, interpolation_type="log_linear"), {}),
    ("EulerDiscreteScheduler", dict(BASE, final_sigmas_type="sigma_min", use_karras_sigmas=True), {}),
    ("EulerAncestralDiscreteScheduler", dict(BASE, timestep_spacing="trailing", rescale_betas_zero_snr=True,
                                             prediction_type="v_prediction"), {}),
    ("LMSDiscreteScheduler", dict(BASE, use_karras_sigmas=True), {}),
    ("HeunDiscreteScheduler", dict(BASE, use_karras_sigmas=True), {}),
    ("HeunDiscreteScheduler", dict(BASE, prediction_type="v_prediction", timestep_spacing="trailing"), {}),
    ("LCMScheduler", dict(BASE, timestep_spacing="trailing", original_inference_steps=50), {}),
    ("DDIMScheduler", dict(BASE, clip_sample=True, set_alpha_to_one=True, timestep_spacing="linspace"), {}),
    ("DDIMScheduler", dict(BASE, prediction_type="sample"), {}),
    ("FlowMatchEulerDiscreteScheduler", dict(num_train_timesteps=1000, shift=3.0, invert_sigmas=False,
                                             shift_terminal=0.02), {}),
    ("FlowMatchEulerDiscreteScheduler", dict(num_train_timesteps=1000, use_dynamic_shifting=True,
                                             time_shift_type="linear", base_shift=0.5, max_shift=1.15), {"mu": 0.8}),
    ("FlowMatchEulerDiscreteScheduler", dict(num_train_timesteps=1000, shift=1.0, use_karras_sigmas=True), {}),
]


def trajectory(cls, config, options, steps, x0):
    s = cls(**config)
    kw = {"mu": options["mu"]} if "mu" in options else {}
    s.set_timesteps(steps, **kw)
    g = torch.Generator("cpu").manual_seed(42)
    x = x0 * getattr(s, "init_noise_sigma", 1.0)  # flow matching has none: 1, as the shared file records
    traj = [x.clone()]
    step_kw = {}
    import inspect
    params = inspect.signature(s.step).parameters
    if "generator" in params:
        step_kw["generator"] = g
    if "eta" in options:
        step_kw["eta"] = options["eta"]
    for t in s.timesteps:
        tf = float(t)
        model_in = s.scale_model_input(x, t) if hasattr(s, "scale_model_input") else x
        eps = 0.5 * model_in * math.cos(tf / 300) + 0.1 * math.sin(tf / 100)
        x = s.step(eps, t, x, **step_kw).prev_sample
        traj.append(x.clone())
    out = {"timesteps": s.timesteps.float().contiguous(), "trajectory": torch.stack(traj).contiguous()}
    if hasattr(s, "sigmas") and s.sigmas is not None:
        out["sigmas"] = torch.as_tensor(s.sigmas).float().contiguous()
    return s, out


def scheduler_cases():
    ref = load_file(f"{FIX}/schedulers.safetensors")
    x0 = ref["c0_n1_trajectory"][0].clone()  # c0 has init_noise_sigma 1: trajectory[0] is x0
    # Sanity: this loop reproduces the shared fixture's stochastic and multistep cases.
    for key, cls, cfg in [("c11_n10", "DPMSolverMultistepScheduler", dict(BASE, algorithm_type="sde-dpmsolver++")),
                          ("c3_n10", "PNDMScheduler", dict(BASE, skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1)),
                          ("c8_n10", "EulerAncestralDiscreteScheduler", dict(BASE, steps_offset=1))]:
        _, o = trajectory(getattr(diffusers, cls), cfg, {}, 10, x0)
        d = (o["trajectory"] - ref[f"{key}_trajectory"]).abs().max().item()
        print(f"sanity {key}: max diff {d}")
    tensors, meta = {}, {"x0_from": "schedulers.safetensors c0_n1_trajectory[0]", "cases": []}
    for i, (cls_name, cfg, options) in enumerate(CASES):
        for n in (1, 4, 10, 25):
            key = f"e{i}_n{n}"
            try:
                s, o = trajectory(getattr(diffusers, cls_name), cfg, options, n, x0)
            except Exception as e:  # record what diffusers refuses, too
                meta["cases"].append({"key": key, "class": cls_name, "config": cfg, "options": options,
                                      "num_inference_steps": n, "error": repr(e)})
                continue
            for k, v in o.items():
                tensors[f"{key}_{k}"] = v
            meta["cases"].append({"key": key, "class": cls_name, "config": cfg, "options": options,
                                  "num_inference_steps": n,
                                  "init_noise_sigma": float(getattr(s, "init_noise_sigma", 1.0)),
                                  "order": s.order})
    save_file(tensors, f"{OUT}/schedulers_extra.safetensors")
    json.dump(meta, open(f"{OUT}/schedulers_extra.json", "w"), indent=1)


if __name__ == "__main__":
    print("torch", torch.__version__, "diffusers", diffusers.__version__)
    import transformers
    print("transformers", transformers.__version__)
    if not os.environ.get("ONLY"):
        scheduler_cases()
    pipeline_runs()
    print("done")
