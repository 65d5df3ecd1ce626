#!/bin/sh
# make check-install: the library as a user gets it from `make install`. Run from the repository
# root after `make all` (the Makefile passes MAKE, CC, BUILD and BINDIR).
#   1. install staged under DESTDIR (PREFIX=/usr/local): exactly the expected files, sd.pc naming
#      PREFIX (not the staging folder), the bundled configs under share/sd/configs; uninstall
#      leaves no file behind.
#   2. install into a temporary PREFIX; through pkg-config: the version agrees in sd.pc, sd.h and
#      the shared library's name and soname; the installed gen finds the installed configs (and
#      $SD_CONFIGS_DIR's); sd.h compiles alone as C99 and as C++ (-pedantic,
#      warnings as errors); libsd.so exports only sd_ symbols; samples/embed.c builds against
#      the shared library and against libsd.a, both write the same image on the tiny SD 1.5
#      fixture, and --cancel-after 2 stops the run with exit status 3 and no image; uninstall
#      leaves the prefix without files.
set -eu
MAKE=${MAKE:-make}
CC=${CC:-cc}
CXX=${CXX:-g++}
BUILD=${BUILD:-build}
BINDIR=${BINDIR:-bin}
MODEL=tests/fixtures/sd15-tiny/pipeline

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "check-install: FAIL: $*"; exit 1; }
ok() { echo "check-install: ok: $*"; }
mk() { "$MAKE" --no-print-directory -s BUILD="$BUILD" BINDIR="$BINDIR" CC="$CC" "$@"; }
# Every file or link under a folder, relative to it, sorted.
files_under() { (cd "$1" && find . \( -type f -o -type l \) | sed 's|^\./||' | sort); }

# What make install must put, relative to PREFIX.
version=$(mk -f Makefile print-version 2>/dev/null) || fail "make print-version"
major=${version%%.*}
{
    for t in cli/*.c; do t=${t#cli/}; echo "bin/${t%.c}"; done
    echo bin/sd-server
    echo include/sd.h
    echo lib/libsd.a
    echo lib/libsd.so
    echo "lib/libsd.so.$major"
    echo "lib/libsd.so.$version"
    echo lib/pkgconfig/sd.pc
    files_under configs | sed 's|^|share/sd/configs/|'
} | sort > "$tmp/expected"

# 1. Staged install.
stage="$tmp/stage"
mk install DESTDIR="$stage" PREFIX=/usr/local > /dev/null
files_under "$stage/usr/local" > "$tmp/got"
diff "$tmp/expected" "$tmp/got" > /dev/null || {
    diff "$tmp/expected" "$tmp/got" || true
    fail "make install DESTDIR=... put other files than expected (< expected, > installed)"
}
grep -qx 'prefix=/usr/local' "$stage/usr/local/lib/pkgconfig/sd.pc" || fail "sd.pc: prefix is not /usr/local"
grep -q "$stage" "$stage/usr/local/lib/pkgconfig/sd.pc" && fail "sd.pc names the DESTDIR folder"
[ "$(readlink "$stage/usr/local/lib/libsd.so.$major")" = "libsd.so.$version" ] || fail "libsd.so.$major link"
[ "$(readlink "$stage/usr/local/lib/libsd.so")" = "libsd.so.$version" ] || fail "libsd.so link"
mk uninstall DESTDIR="$stage" PREFIX=/usr/local > /dev/null
[ -z "$(files_under "$stage")" ] || fail "make uninstall DESTDIR=... left: $(files_under "$stage" | tr '\n' ' ')"
ok "install DESTDIR=... PREFIX=/usr/local: $(wc -l < "$tmp/expected") files, uninstall removes them all"

# 2. Install into a prefix and use it.
prefix="$tmp/prefix"
mk install PREFIX="$prefix" > /dev/null
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
pc_version=$(pkg-config --modversion sd) || fail "pkg-config cannot read sd.pc"
h_version=$(printf '#include <sd.h>\nSD_VERSION\n' | "$CC" -E -P $(pkg-config --cflags sd) -x c - | tail -n 1)
soname=$(readelf -d "$prefix/lib/libsd.so.$version" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$pc_version" = "$version" ] && [ "$h_version" = "\"$version\"" ] && [ "$soname" = "libsd.so.$major" ] ||
    fail "versions disagree: Makefile $version, sd.pc $pc_version, sd.h $h_version, soname $soname"
ok "version $version in the Makefile, sd.pc, sd.h and the library's name; soname $soname"

# The bundled configs of single-file checkpoints: installed with their links intact, and found by
# the installed gen beside itself (<prefix>/bin -> <prefix>/share/sd/configs), not in the source
# tree the build recorded; $SD_CONFIGS_DIR moves them.
[ -L "$prefix/share/sd/configs/sd15/tokenizer/vocab.json" ] && [ -f "$prefix/share/sd/configs/sd15/tokenizer/vocab.json" ] ||
    fail "share/sd/configs/sd15/tokenizer/vocab.json is not a working link"
want=$(cd "$prefix/share/sd/configs" && pwd -P)
got=$(env -u SD_CONFIGS_DIR "$prefix/bin/gen" --version | sed -n 's/^configs: //p')
[ "$got" = "$want" ] || fail "installed gen finds its configs in '$got', not '$want'"
got=$(SD_CONFIGS_DIR="$tmp" "$prefix/bin/gen" --version | sed -n 's/^configs: //p')
[ "$got" = "$tmp" ] || fail "SD_CONFIGS_DIR=$tmp: gen reports '$got'"
ok "configs installed in share/sd/configs (links kept); the installed gen finds them there"

# The installed header alone, in both languages (nothing but -I of the prefix).
printf '#include <sd.h>\nint main(void) { sd_gen_params g; sd_gen_params_init(&g); return g.steps; }\n' \
    > "$tmp/header.c"
"$CC" -std=c99 -pedantic -Wall -Wextra -Werror -fsyntax-only -I"$prefix/include" "$tmp/header.c" ||
    fail "sd.h does not compile as C99"
"$CXX" -x c++ -pedantic -Wall -Wextra -Werror -fsyntax-only -I"$prefix/include" "$tmp/header.c" ||
    fail "sd.h does not compile as C++"
ok "sd.h compiles alone as C99 and C++ (-pedantic -Wall -Wextra -Werror)"

# The dynamic symbol table: sd_ names only. Allowed besides: the end-of-section markers that some
# linkers export from every shared object (_edata, _end, __bss_start) and the init/fini entry
# points (_init, _fini); none of them is ours.
nm -D --defined-only "$prefix/lib/libsd.so" | awk '{ print $NF }' > "$tmp/exported"
others=$(grep -v -e '^sd_' -e '^_init$' -e '^_fini$' -e '^_edata$' -e '^_end$' -e '^__bss_start$' \
    "$tmp/exported" || true)
[ -z "$others" ] || fail "libsd.so exports non-API symbols: $(echo $others)"
for f in sd_pipeline_load sd_generate sd_result_free sd_pipeline_free sd_last_error; do
    grep -qx "$f" "$tmp/exported" || fail "libsd.so does not export $f"
done
ok "libsd.so exports $(grep -c '^sd_' "$tmp/exported") sd_ symbols and nothing else"

# samples/embed.c against the shared library, then against libsd.a (-l:libsd.a picks the archive
# where -lsd would pick the .so; the rest of the static link comes from sd.pc's private fields).
"$CC" -std=c99 -pedantic -Wall -Wextra -Werror samples/embed.c -o "$tmp/embed-shared" \
    $(pkg-config --cflags --libs sd) || fail "embed.c does not build against libsd.so"
"$CC" -std=c99 -pedantic -Wall -Wextra -Werror samples/embed.c -o "$tmp/embed-static" \
    $(pkg-config --static --cflags --libs sd | sed 's/\(^\| \)-lsd\( \|$\)/\1-l:libsd.a\2/') ||
    fail "embed.c does not build against libsd.a"
readelf -d "$tmp/embed-shared" | grep -q "NEEDED.*\[libsd.so.$major\]" || fail "embed-shared does not load libsd.so.$major"
readelf -d "$tmp/embed-static" | grep -q "NEEDED.*libsd" && fail "embed-static loads a shared libsd"
ok "samples/embed.c builds through pkg-config: shared (needs libsd.so.$major) and static"

export LD_LIBRARY_PATH="$prefix/lib"
for kind in shared static; do
    rc=0
    "$tmp/embed-$kind" -m "$MODEL" --steps 3 --threads 2 -o "$tmp/$kind.ppm" "a photo of an astronaut" \
        2> "$tmp/$kind.log" || rc=$?
    [ "$rc" -eq 0 ] || { cat "$tmp/$kind.log"; fail "embed-$kind exited with status $rc"; }
    # "P6", "W H", "255" lines, then exactly W * H * 3 bytes.
    set -- $(head -n 3 "$tmp/$kind.ppm")
    [ "$#" -eq 4 ] && [ "$1" = P6 ] && [ "$4" = 255 ] &&
        [ $(wc -c < "$tmp/$kind.ppm") -eq $(( $(head -n 3 "$tmp/$kind.ppm" | wc -c) + $2 * $3 * 3 )) ] ||
        fail "embed-$kind wrote no valid PPM"
    grep -q 'step 3/' "$tmp/$kind.log" || fail "embed-$kind showed no progress to step 3"
done
cmp -s "$tmp/shared.ppm" "$tmp/static.ppm" || fail "the shared and static builds wrote different images"
ok "both write the same $2x$3 image (3 steps on $MODEL), progress shown"

rc=0
"$tmp/embed-shared" -m "$MODEL" --steps 5 --threads 2 --cancel-after 2 -o "$tmp/cancel.ppm" "a photo" \
    2> "$tmp/cancel.log" || rc=$?
[ "$rc" -eq 3 ] || { cat "$tmp/cancel.log"; fail "--cancel-after 2: exit status $rc, expected 3"; }
grep -q cancelled "$tmp/cancel.log" || fail "--cancel-after 2: no 'cancelled' message"
grep -q 'step 3/' "$tmp/cancel.log" && fail "--cancel-after 2: the run went on past step 2"
[ -e "$tmp/cancel.ppm" ] && fail "--cancel-after 2: an image was written"
ok "--cancel-after 2: exit status 3 after step 2, no image"

mk uninstall PREFIX="$prefix" > /dev/null
[ -z "$(files_under "$prefix")" ] || fail "make uninstall left: $(files_under "$prefix" | tr '\n' ' ')"
ok "make uninstall leaves the prefix without files"
