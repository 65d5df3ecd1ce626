#!/bin/sh
# The diffusers / transformers references still to record, in one device call (the device's
# 30 minutes per session are scarce): run from the repository root on the device machine with
#   run(command="sh tools/reference/device_pending.sh", carry=[".device"])
# .device/ holds diffusers-src.tar.xz and the libcjson .deb files (README of tools/reference: the
# device recipe). Writes $OUT/refs.tgz; unpack it at the repository root and commit what the
# scripts' docstrings name. Remove an entry here once its references are committed.
set -u
D=$PWD/.device
mkdir -p "$D/root" "$D/dsrc"
for f in "$D"/*.deb; do dpkg -x "$f" "$D/root"; done
tar -xJf "$D/diffusers-src.tar.xz" -C "$D/dsrc"
export LD_LIBRARY_PATH="$D/root/usr/lib/x86_64-linux-gnu" PYTHONPATH="$D/dsrc/src"
lscpu | grep -E "Model name" ; python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__)"
R=$OUT/r
mkdir -p "$R"
# 1. The real T5 tokenizer (configs/t5-tokenizer) through transformers' T5TokenizerFast.
python3 tools/reference/t5_vocab_refs.py "$R/t5_vocab_refs.json" 2>&1 | tail -3
# 2. AutoencoderTiny references (writes taesd-tiny/, taesd3-tiny/, tiny_vae_refs.*).
python3 tools/reference/tiny_vae_refs.py "$R" 2>&1 | tail -5
# 3. What diffusers reads from the SD3 / SD3.5 single files and the FLUX BFL file the tests write.
make -j16 build/tests/test_sd3_file build/tests/test_flux_bfl \
    CPPFLAGS="-D_GNU_SOURCE -I$D/root/usr/include -I$D/root/usr/include/cjson" \
    LDFLAGS="-fopenmp -L$D/root/usr/lib/x86_64-linux-gnu" > /tmp/build.log 2>&1 || tail -20 /tmp/build.log
build/tests/test_sd3_file 2>&1 | tail -2
build/tests/test_flux_bfl 2>&1 | tail -2
python3 tools/reference/dit_file_refs.py "$R/dit_file_refs.json" 2>&1 | tail -8
(cd "$OUT" && tar czf refs.tgz r && rm -rf r)
ls -la "$OUT"
