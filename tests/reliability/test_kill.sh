#!/bin/sh
# "Nothing lost" (issue 22): a SIGKILL while gen or sd-compare writes its outputs leaves no partial
# file under a final name, and an output of an earlier run under the same name is untouched.
#
# Deterministic: the kill lands at a chosen point of a chosen file through the writers' test hook
# (SD_TEST_KILL_WRITE="NAME:put[:K]" kills just after the K-th write of the temporary file reached
# the disk, "NAME:commit" once it is complete, before the rename; core/fileutil.h), which is what
# a kill from outside landing there does. Every writer is covered: PNG (gen's batch, sd-compare's
# images and grid), JPEG, the latents (--save-latents), the previews (--preview), sd-compare's
# report.json (written by the CLI itself). sd-server writes no file under a name a user sees (its
# images go out in the reply, or stay in memory for response_format url), so it has nothing to lose.
#
# Ground truth: two unkilled runs into their own folders, OLD (seed 1) and NEW (seed 2). Each
# round copies OLD's outputs into a folder, kills a seed-2 run writing there at one point, then
# checks: the process died by SIGKILL; the file being written still equals OLD's (or is absent
# when the round started empty); every other output equals OLD's or NEW's byte for byte (written
# whole before the kill, or not yet); the killed file's temporary <name>.tmp-<pid> is what is left.
# Prints "N passed, N failed" as tests/run.sh expects.
bin=${SD_BIN_DIR:-bin}
model=tests/fixtures/sd15-tiny/pipeline
passed=0 failed=0
ok() { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }
dir=$(mktemp -d /tmp/sd-kill-XXXXXX)
trap 'rm -rf "$dir"' EXIT

# The two programs with their outputs in folder $1 (seed $2).
gen_run() {
    d=$1 s=$2
    "$bin/gen" -m "$model" -W 64 -H 64 --steps 1 -s "$s" --batch 3 -o "$d/out.png" \
        --save-latents "$d/lat.safetensors" --preview "$d/prev.png" -q "a cat" >/dev/null 2>&1 &&
        "$bin/gen" -m "$model" -W 64 -H 64 --steps 1 -s "$s" -o "$d/one.jpg" -q "a cat" \
            >/dev/null 2>&1
}
compare_run() {
    "$bin/sd-compare" -m "$model" -W 64 -H 64 --steps 1 -s "$2" --schedulers euler,ddim \
        -o "$1/cmp" -q "a cat" >/dev/null 2>&1
}
GEN_FILES="out-0.png out-1.png out-2.png lat.safetensors prev.png one.jpg"
CMP_FILES="cmp/euler.png cmp/ddim.png cmp/grid.png cmp/report.json"

mkdir -p "$dir/old" "$dir/new"
if gen_run "$dir/old" 1 && gen_run "$dir/new" 2 && compare_run "$dir/old" 1 &&
    compare_run "$dir/new" 2; then ok; else fail "the reference runs failed"; fi
for f in $GEN_FILES $CMP_FILES; do
    if [ -s "$dir/old/$f" ] && [ -s "$dir/new/$f" ]; then ok; else fail "no reference $f"; fi
done
# The seed-2 outputs must differ from the seed-1 ones, or "untouched" would prove nothing.
# (report.json holds timings, so it is told apart by more than the seed anyway.)
for f in $GEN_FILES $CMP_FILES; do
    if ! cmp -s "$dir/old/$f" "$dir/new/$f"; then ok; else
        fail "$f: seeds 1 and 2 give one file"; fi
done

same() { cmp -s "$1" "$2"; }
# A whole file of its kind, for the outputs whose bytes differ between runs of one seed: the grid
# and the report carry timings.
whole() {
    case $1 in
    *.png*) [ "$(tail -c 12 "$1" | od -An -tx1 | tr -d ' \n')" = "0000000049454e44ae426082" ] ;;
    *.json*) python3 -m json.tool "$1" >/dev/null 2>&1 ;;
    *) false ;;
    esac
}
varies() { [ "$1" = cmp/grid.png ] || [ "$1" = cmp/report.json ]; }

# round PROGRAM(gen|compare) FILE POINT START(old|empty)
round() {
    prog=$1 file=$2 point=$3 start=$4
    w="$dir/round"
    rm -rf "$w"
    mkdir -p "$w/cmp"
    [ "$start" = old ] && cp -a "$dir/old/." "$w/"
    if [ "$prog" = gen ]; then
        files=$GEN_FILES
        if [ "$file" = one.jpg ]; then
            # the JPEG comes from the second gen: let the first one finish unkilled
            "$bin/gen" -m "$model" -W 64 -H 64 --steps 1 -s 2 --batch 3 -o "$w/out.png" \
                --save-latents "$w/lat.safetensors" --preview "$w/prev.png" -q "a cat" \
                >/dev/null 2>&1
            SD_TEST_KILL_WRITE="$file:$point" "$bin/gen" -m "$model" -W 64 -H 64 --steps 1 -s 2 \
                -o "$w/one.jpg" -q "a cat" >/dev/null 2>&1
        else
            SD_TEST_KILL_WRITE="$file:$point" "$bin/gen" -m "$model" -W 64 -H 64 --steps 1 -s 2 \
                --batch 3 -o "$w/out.png" --save-latents "$w/lat.safetensors" \
                --preview "$w/prev.png" -q "a cat" >/dev/null 2>&1
        fi
    else
        files=$CMP_FILES
        SD_TEST_KILL_WRITE="$file:$point" compare_run "$w" 2
    fi
    rc=$?
    what="$prog killed at $file:$point (starting $start)"
    if [ $rc -eq 137 ]; then ok; else fail "$what: exit status $rc, not SIGKILL's 137"; fi
    if [ "$start" = old ]; then
        if same "$w/$file" "$dir/old/$file"; then ok; else
            fail "$what: $file is not the earlier one"; fi
    else
        if [ ! -e "$w/$file" ]; then ok; else fail "$what: $file exists"; fi
    fi
    tmp=$(ls "$w/$file".tmp-* 2>/dev/null | head -n 1)
    if [ -n "$tmp" ]; then ok; else
        fail "$what: no temporary file left (the kill was not there)"; fi
    if [ "$point" = commit ]; then
        # complete, as the new run would have written it
        if same "$tmp" "$dir/new/$file" || { varies "$file" && whole "$tmp"; }; then ok; else
            fail "$what: the temporary file is not the whole new $file"; fi
    elif [ -n "$tmp" ] && [ "$file" != one.jpg ]; then
        # cut short (a 64x64 JPEG goes out in one write, so there the put is the whole file)
        if ! same "$tmp" "$dir/new/$file" && ! whole "$tmp"; then ok; else
            fail "$what: the temporary file is whole"; fi
    fi
    for f in $files; do
        [ "$f" = "$file" ] && continue
        if [ ! -e "$w/$f" ] && [ "$start" = empty ]; then ok; continue; fi
        if same "$w/$f" "$dir/old/$f" || same "$w/$f" "$dir/new/$f" ||
            { varies "$f" && whole "$w/$f"; }; then
            ok
        else
            fail "$what: $f is neither the earlier nor a whole new file"
        fi
    done
    echo "ok $what"
}

# Several points in one PNG (its signature, IHDR, the text chunk, image data), the batch's first
# and last files, each writer's first write and its rename.
for k in 1 3 8; do round gen out-1.png "put:$k" old; done
round gen out-0.png put empty
round gen out-2.png commit old
round gen lat.safetensors put old
round gen lat.safetensors commit empty
round gen prev.png put old
round gen prev.png commit old
round gen one.jpg put old
round gen one.jpg commit empty
round compare cmp/euler.png put old
round compare cmp/ddim.png commit empty
round compare cmp/grid.png put:3 old
round compare cmp/report.json commit old

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
