#!/bin/sh
# The kernel instruction set levels (SD_KERNEL_ISA values) this CPU runs, best first; with
# --below-best, only those below the best (the ones `make test` does not already use). Read from
# the flags Linux reports, which it clears for a feature the OS does not enable (x86 "flags",
# aarch64 "Features"); elsewhere only "generic" is known.
levels="generic"
if [ -r /proc/cpuinfo ]; then
    flags=$(grep -m1 -E '^(flags|Features)' /proc/cpuinfo)
    has() { case " $flags " in *" $1 "*) return 0 ;; esac; return 1; }
    if has avx2 && has fma; then levels="avx2 $levels"; fi
    if has avx512f; then levels="avx512 $levels"; fi
    if has asimd; then levels="neon $levels"; fi
fi
if [ "$1" = "--below-best" ]; then
    set -- $levels
    shift
    echo "$@"
else
    echo $levels
fi
