#!/bin/sh
# Runs a command on the device machine with diffusers and the build's libraries set up:
#   sh tools/device_trim.sh      # here: keep the travelling tree under the device's 64 MiB
#   run(command="sh tools/reference/device_env.sh python3 tools/reference/X.py $OUT/...",
#       carry=[".device"])
#   sh tools/device_trim.sh --restore
# .device/ (git-ignored) is what tools/reference/make_device_carry.sh writes: diffusers-src.tar.xz
# (diffusers' pruned source) and the libcjson .deb files (the device has no cJSON). With BUILD set
# to make targets, builds them first (no libmicrohttpd there: never `all`).
set -u
D=$PWD/.device
mkdir -p "$D/root" "$D/dsrc"
for f in "$D"/*.deb; do dpkg -x "$f" "$D/root"; done
tar -xJf "$D/diffusers-src.tar.xz" -C "$D/dsrc"
export LD_LIBRARY_PATH="$D/root/usr/lib/x86_64-linux-gnu" PYTHONPATH="$D/dsrc/src"
lscpu | grep -E "Model name"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
if [ -n "${BUILD:-}" ]; then
    make -j"$(nproc)" $BUILD CPPFLAGS="-D_GNU_SOURCE -I$D/root/usr/include -I$D/root/usr/include/cjson" \
        LDFLAGS="-fopenmp -L$D/root/usr/lib/x86_64-linux-gnu" > /tmp/build.log 2>&1 || { tail -20 /tmp/build.log; exit 1; }
fi
[ $# -gt 0 ] && exec "$@"
