#!/bin/sh
# Writes .device/ (git-ignored), what device runs carry: diffusers' source pruned to the pipelines
# the references use (SD 1.x/2.x, SDXL, SD3, FLUX, LCM, ControlNet and what they import; 1.3 MB
# as .tar.xz; its scripts/ holds the two convert_diffusers_to_original_* scripts) and Debian's
# libcjson .deb files. DIFFUSERS is a diffusers git checkout, e.g. the
# mirror `fetch github:huggingface/diffusers` brings:
#   DIFFUSERS=/work/.mirror/huggingface+diffusers/repo sh tools/reference/make_device_carry.sh
set -eu
: "${DIFFUSERS:?set DIFFUSERS to a diffusers git checkout}"
cd "$(dirname "$0")/../.."
out=$PWD/.device tmp=$(mktemp -d)
mkdir -p "$out"
git -C "$DIFFUSERS" archive HEAD src/diffusers scripts/convert_diffusers_to_original_stable_diffusion.py \
    scripts/convert_diffusers_to_original_sdxl.py | tar -x -C "$tmp"
keep=" stable_diffusion stable_diffusion_xl stable_diffusion_3 flux latent_consistency_models deprecated latent_diffusion controlnet ddim ddpm "
for d in "$tmp"/src/diffusers/pipelines/*/; do
    n=$(basename "$d")
    case "$keep" in *" $n "*) ;; *) rm -rf "$d" ;; esac
done
tar -cJf "$out/diffusers-src.tar.xz" -C "$tmp" src scripts
(cd "$out" && apt-get download libcjson1 libcjson-dev >/dev/null)
rm -rf "$tmp"
ls -la "$out"
