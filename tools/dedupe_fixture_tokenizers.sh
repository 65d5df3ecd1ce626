#!/bin/sh
# Replace copies of the CLIP vocabulary and merges under tests/fixtures with relative symlinks
# to tests/fixtures/clip_tokenizer/ (keeps the working tree small enough to travel; that folder
# links to the one copy in configs/clip-bpe/, which the bundled single-file configs use).
cd "$(dirname "$0")/../tests/fixtures" || exit 1
for f in $(find . -path ./clip_tokenizer -prune -o \( -name vocab.json -o -name merges.txt \) -type f -print); do
    canon=clip_tokenizer/$(basename "$f")
    cmp -s "$f" "$canon" || continue
    depth=$(echo "$f" | sed 's|^\./||' | tr -cd / | wc -c)
    up=$(printf '../%.0s' $(seq 1 "$depth"))
    rm "$f" && ln -s "$up$canon" "$f"
done

# sd35-tiny shares its CLIP encoders and VAE with sd3-tiny byte for byte: link them too.
for f in text_encoder/model.safetensors text_encoder_2/model.safetensors vae/diffusion_pytorch_model.safetensors; do
    a=sd35-tiny/pipeline/$f b=sd3-tiny/pipeline/$f
    [ -f "$a" ] && [ ! -L "$a" ] && cmp -s "$a" "$b" && rm "$a" && ln -s "../../../$b" "$a"
done
