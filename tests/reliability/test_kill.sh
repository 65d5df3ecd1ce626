#!/bin/sh
# "Nothing lost" (issue 22): gen killed with SIGKILL while it writes its outputs leaves no partial
# file under a final name (each is a whole PNG, or absent) and a file written before is untouched.
# Each round starts a batch of 4 images, waits for the first file of the write phase to appear,
# then kills at once or a little later, so the kill lands between or inside the image writes.
# Prints "N passed, N failed" as tests/run.sh expects.
bin=${SD_BIN_DIR:-bin}
model=tests/fixtures/sd15-tiny/pipeline
passed=0 failed=0
ok() { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }
dir=$(mktemp -d /tmp/sd-kill-XXXXXX)
# A whole PNG ends with the IEND chunk: length 0, "IEND", its CRC.
whole_png() { [ "$(tail -c 12 "$1" | od -An -tx1 | tr -d ' \n')" = "0000000049454e44ae426082" ]; }

"$bin/gen" -m "$model" -W 64 -H 64 --steps 1 -s 7 -o "$dir/earlier.png" "earlier" >/dev/null 2>&1
if whole_png "$dir/earlier.png"; then ok; else fail "gen did not write earlier.png"; fi
before=$(cksum < "$dir/earlier.png")

partial_rounds=0
for i in 1 2 3 4; do
    "$bin/gen" -m "$model" -W 256 -H 256 --steps 1 --batch 4 -s "$i" -o "$dir/r$i.png" "a cat" \
        >/dev/null 2>&1 &
    pid=$!
    while kill -0 "$pid" 2>/dev/null && ! ls "$dir" | grep -q "^r$i"; do :; done
    [ "$i" -gt 1 ] && sleep "0.0$((i * 2 - 2))"
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    n=0
    for f in "$dir"/r"$i"-*.png; do
        [ -e "$f" ] || continue
        n=$((n + 1))
        if whole_png "$f"; then ok; else fail "round $i: $(basename "$f") is a partial PNG"; fi
    done
    [ "$n" -lt 4 ] && partial_rounds=$((partial_rounds + 1))
    left=$(ls "$dir" | grep -c "^r$i.*\.tmp-")
    echo "round $i: $n of 4 images under their final names, $left temporary file(s) left"
done
echo "$partial_rounds of 4 rounds were killed before all 4 images were written"
if [ "$(cksum < "$dir/earlier.png")" = "$before" ]; then ok; else fail "earlier.png changed"; fi
rm -rf "$dir"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
