#!/bin/sh
# Full-size single files made by diffusers' own conversion scripts, against their folders:
#   DIFFUSERS=path/to/diffusers tools/reference/full_single_file.sh WORKDIR [sd15|sdxl ...]
# For each model: build/bench/make_model writes the release's folder with random weights (fp16),
# scripts/convert_diffusers_to_original_{stable_diffusion,sdxl}.py --half turns it into the one
# .safetensors file people download, then bin/gen runs both, the file with no --config (the
# bundled configs decide), and the two images must have the same pixels. Needs python3 with torch and
# safetensors, and `make all` and build/bench/make_model built. Prints what gen detected.
# Where Debian's python3-torch is all there is (no safetensors package): the scripts need only
# its load_file/save_file, which tools/reference/safetensors_shim provides:
#   PATH=/usr/bin:$PATH PYTHONPATH=tools/reference/safetensors_shim DIFFUSERS=... sh $0 WORK
set -eu
WORK=$1
shift
MODELS=${*:-sd15 sdxl}
GEN=${GEN:-bin/gen}
MAKE_MODEL=${MAKE_MODEL:-build/bench/make_model}
export SD_CONFIGS_DIR=${SD_CONFIGS_DIR:-$PWD/configs}
mkdir -p "$WORK"
pixels() { # sha256 of a PNG's decompressed IDAT stream (python3's zlib: no PIL needed)
    python3 -c 'import hashlib, struct, sys, zlib
d = open(sys.argv[1], "rb").read(); i = 8; idat = b""
while i < len(d):
    n = struct.unpack(">I", d[i:i + 4])[0]
    if d[i + 4:i + 8] == b"IDAT": idat += d[i + 8:i + 8 + n]
    i += 12 + n
print(hashlib.sha256(zlib.decompress(idat)).hexdigest())' "$1"
}
timed() { # LABEL COMMAND...: runs it, prints its last lines (gen's detection line) and seconds
    label=$1
    shift
    a=$(date +%s.%N)
    "$@" >"$WORK/log" 2>&1 || { cat "$WORK/log"; return 1; }
    b=$(date +%s.%N)
    tail -n 3 "$WORK/log"
    echo "$label: $(python3 -c "print(round($b - $a, 2))") s"
}
status=0
for m in $MODELS; do
    case $m in
    sd15) script=convert_diffusers_to_original_stable_diffusion.py; size=256 ;;
    sdxl) script=convert_diffusers_to_original_sdxl.py; size=512 ;;
    *) echo "unknown model $m"; exit 2 ;;
    esac
    t0=$(date +%s)
    "$MAKE_MODEL" "bench/models/$m" "$WORK/$m" --dtype f16
    python3 "$DIFFUSERS/scripts/$script" --model_path "$WORK/$m" \
        --checkpoint_path "$WORK/$m.safetensors" --half --use_safetensors
    t1=$(date +%s)
    echo "$m: folder and single file written in $((t1 - t0)) s"
    set -- -s 42 --steps 2 -W $size -H $size -n "blurry" "a lighthouse at dawn"
    timed "$m folder" "$GEN" -m "$WORK/$m" "$@" -o "$WORK/$m-folder.png"
    timed "$m single file" "$GEN" -m "$WORK/$m.safetensors" "$@" -o "$WORK/$m-file.png"
    # the pixels, not the PNG bytes: the parameters chunk names the model (folder or file)
    if [ "$(pixels "$WORK/$m-folder.png")" = "$(pixels "$WORK/$m-file.png")" ]; then
        echo "$m: single file == folder (same pixels)"
    else
        echo "$m: single file and folder DIFFER"
        status=1
    fi
    rm -rf "${WORK:?}/$m" "$WORK/$m.safetensors"
done
exit $status
