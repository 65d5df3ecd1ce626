#!/bin/sh
# The device tool copies the working tree (tracked files plus untracked, unignored ones) and the
# carried paths, 64 MiB in all; the tracked tree alone is close to that. Before a device call that
# needs none of diffusers' recorded outputs (the reference scripts write new ones; a bench builds
# random weights), take the largest of them out of the working tree, and put them back afterwards:
#   sh tools/device_trim.sh            # remove, print what will travel
#   sh tools/device_trim.sh --restore  # git checkout the removed paths
cd "$(dirname "$0")/.." || exit 1
PATHS="tests/fixtures/sd15-tiny/expected tests/fixtures/sd2v-tiny/expected tests/fixtures/sdxl-tiny/expected"
if [ "${1:-}" = "--restore" ]; then
    git checkout -- $PATHS && echo "restored: $PATHS"
    exit $?
fi
rm -rf $PATHS
tracked=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s+=$1} END{print s}')
carry=$( [ -d .device ] && du -sb .device | cut -f1 || echo 0)
echo "removed: $PATHS"
echo "travels: $tracked bytes in the tree + $carry in .device = $((tracked + carry)) of 67108864"
