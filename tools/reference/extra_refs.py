"""Extra reference data recorded by diffusers itself, for behaviour the shared fixtures do not cover.

Run on a machine with torch + transformers, with diffusers' source on PYTHONPATH:
    PYTHONPATH=path/to/diffusers/src python3 tools/reference/extra_refs.py OUTDIR
Writes OUTDIR/extra_runs.safetensors + extra_runs.json (pipeline runs at latent sizes that are not
multiples of 8, in the layout of tests/fixtures/*/expected) and OUTDIR/schedulers_extra.safetensors +
schedulers_extra.json (scheduler options beyond tests/fixtures/schedulers.json, under the same
synthetic model). Everything runs in float32 on the CPU, as the shared fixtures were made.
"""
import json
import math
import sys

import torch
from safetensors.torch import load_file, save_file

import diffusers
from diffusers import StableDiffusionPipeline

OUT = sys.argv[1]
FIX = "tests/fixtures"
torch.set_grad_enabled(False)


def record_run(pipe, name, tensors, meta, **call):
    """One pipeline call with every intermediate recorded (names as in the shared fixtures)."""
    inputs, outputs, ts, steps = [], [], [], []
    unet_forward = pipe.unet.forward

    def hooked(sample, timestep, *a, **k):
        out = unet_forward(sample, timestep, *a, **k)
        inputs.append(sample.clone())
        outputs.append(out[0].clone() if isinstance(out, tuple) else out.sample.clone())
        ts.append(float(timestep))
        return out

    pipe.unet.forward = hooked

    def on_step(p, i, t, kw):
        steps.append(kw["latents"].clone())
        return kw

    pe, ne = pipe.encode_prompt(call["prompt"], "cpu", 1, call["guidance_scale"] > 1,
                                call.get("negative_prompt"), clip_skip=call.get("clip_skip"))
    g = torch.Generator("cpu").manual_seed(call["seed"])
    img = pipe(**{k: v for k, v in call.items() if k != "seed"}, generator=g, output_type="np",
               callback_on_step_end=on_step).images
    pipe.unet.forward = unet_forward
    tensors[f"{name}.prompt_embeds"] = pe.contiguous()
    if ne is not None:
        tensors[f"{name}.negative_prompt_embeds"] = ne.contiguous()
    tensors[f"{name}.timesteps"] = pipe.scheduler.timesteps.float().contiguous()
    tensors[f"{name}.model_inputs"] = torch.stack(inputs).contiguous()
    tensors[f"{name}.model_outputs"] = torch.stack(outputs).contiguous()
    tensors[f"{name}.model_timesteps"] = torch.tensor(ts, dtype=torch.float32)
    tensors[f"{name}.latents_steps"] = torch.stack(steps).contiguous()
    tensors[f"{name}.image"] = torch.from_numpy(img).contiguous()
    meta[name] = dict(call, scheduler_class=type(pipe.scheduler).__name__,
                      scheduler_config=dict(pipe.scheduler.config))


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
]


def pipeline_runs():
    tensors, meta = {}, {}
    for name, model, sched, overrides, call in RUNS:
        pipe = StableDiffusionPipeline.from_pretrained(f"{FIX}/{model}/pipeline", torch_dtype=torch.float32,
                                                       safety_checker=None)
        pipe.scheduler = getattr(diffusers, sched).from_config(pipe.scheduler.config, **overrides)
        if not hasattr(pipe.text_encoder, "text_model"):
            # transformers 5's CLIPTextModel has no .text_model, which diffusers' clip_skip path
            # still reaches for (text_model.final_layer_norm): point it at the model itself.
            object.__setattr__(pipe.text_encoder, "text_model", pipe.text_encoder)
        record_run(pipe, name, tensors, meta, **call)
        meta[name]["model"] = model
        meta[name]["scheduler_overrides"] = overrides
    save_file(tensors, f"{OUT}/extra_runs.safetensors")
    json.dump(meta, open(f"{OUT}/extra_runs.json", "w"), indent=1, default=str)


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
    scheduler_cases()
    pipeline_runs()
    print("done")
