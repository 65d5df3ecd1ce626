#!/bin/sh
# A scheduler comparison with Stable Diffusion 1.5: eight schedulers at 20 and 30 steps, one
# prompt, one seed. Writes OUTDIR/<scheduler>-<steps>.png, OUTDIR/grid.png and OUTDIR/report.json.
#
#   samples/compare-sd15.sh [MODEL_DIR] [OUTDIR]
#
# MODEL_DIR: a diffusers folder of stable-diffusion-v1-5 (default: $SD_MODEL); OUTDIR: default
# compare-sd15. On a CPU this renders 16 images of 512x512, so it takes a while; the progress
# lines say how long each took.
set -e
bin="$(dirname "$0")/../bin/sd-compare"
model="${1:-$SD_MODEL}"
if [ -z "$model" ]; then
    echo "usage: $0 MODEL_DIR [OUTDIR] (or set SD_MODEL)" >&2
    exit 2
fi
exec "$bin" -m "$model" -s 42 --steps 20,30 \
    --schedulers pndm,ddim,euler,euler_a,dpm++2m,dpm++2m_karras,unipc,heun \
    -n "blurry, low quality" \
    -o "${2:-compare-sd15}" \
    "a lighthouse on a cliff at dawn, oil painting, dramatic light"
