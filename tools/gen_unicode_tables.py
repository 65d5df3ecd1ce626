#!/usr/bin/env python3
"""Writes text_encoder/unicode_tables.c: the Unicode data the CLIP tokenizer needs, as compact C
range tables, from this Python's unicodedata module.

    python3 tools/gen_unicode_tables.py > text_encoder/unicode_tables.c

Tables (their C types are declared in text_encoder/unicode_tables.h):
  - character classes as the tokenizer's split regexes (Oniguruma) see them: \\p{L} letters,
    \\p{N} numbers and \\s white space, as ranges;
  - full lower-case mappings of single characters (what Rust's char::to_lowercase gives, which the
    tokenizers Lowercase normalizer applies char by char: no context-dependent final sigma), as runs
    with a stride and a delta, plus the few one-to-many mappings;
  - canonical combining classes (ranges), one-level canonical decompositions and the primary
    composites (the pairs that NFC recomposes), for NFC. Hangul syllables are algorithmic and absent.

Unicode versions: Python 3.11 has Unicode 14.0. The reference (the tokenizers library) takes its
regex classes from the Oniguruma it bundles, its lower case from the Rust standard library and its
NFC from the unicode-normalization-alignments crate, each with its own Unicode version, so results
may differ on characters added or changed between those versions (none is in the test prompts).
Here a character unassigned in 14.0 is "other" (neither letter, number nor space), has no case
mapping and is a starter.
"""
import sys
import unicodedata as ud

MAX_CP = 0x110000


def char_class(cp):
    """1: \\p{L}; 2: \\p{N}; 3: Oniguruma's Unicode \\s (U+0009..U+000D, U+0085 and the
    Zs/Zl/Zp categories, which is also the White_Space property); 0: anything else."""
    cat = ud.category(chr(cp))
    if cat[0] == "L":
        return 1
    if cat[0] == "N":
        return 2
    if cat in ("Zs", "Zl", "Zp") or 0x09 <= cp <= 0x0D or cp == 0x85:
        return 3
    return 0


def class_ranges():
    """Maximal runs of code points of the same nonzero char_class."""
    out = []
    for cp in range(MAX_CP):
        cls = char_class(cp)
        if not cls:
            continue
        if out and out[-1][1] == cp - 1 and out[-1][2] == cls:
            out[-1][1] = cp
        else:
            out.append([cp, cp, cls])
    return out


def lower_runs():
    """Single-code-point lower-case mappings grouped into runs (first, last, stride, delta):
    every stride-th code point from first to last maps to itself + delta; the code points between
    them map to themselves. Returns the runs and the one-to-many mappings."""
    simple, multi = [], []
    for cp in range(MAX_CP):
        low = chr(cp).lower()
        if low == chr(cp):
            continue
        if len(low) == 1:
            simple.append((cp, ord(low) - cp))
        else:
            multi.append((cp, [ord(c) for c in low]))
    runs = []
    for cp, delta in simple:
        if runs:
            first, last, stride, d = runs[-1]
            if d == delta and (
                (stride == 0 and cp - last in (1, 2)) or (stride and cp - last == stride)
            ):
                runs[-1] = [first, cp, cp - last, d]
                continue
        runs.append([cp, cp, 0, delta])
    for r in runs:
        if r[2] == 0:
            r[2] = 1
    # Check the runs reproduce the mappings exactly (no mapped code point falls between the
    # stride steps of a run, since runs only grow over consecutive entries of the sorted list).
    rebuilt = {}
    for first, last, stride, d in runs:
        for cp in range(first, last + 1, stride):
            rebuilt[cp] = d
    assert rebuilt == dict(simple)
    return runs, multi


def ccc_ranges():
    out = []
    for cp in range(MAX_CP):
        ccc = ud.combining(chr(cp))
        if not ccc:
            continue
        if out and out[-1][1] == cp - 1 and out[-1][2] == ccc:
            out[-1][1] = cp
        else:
            out.append([cp, cp, ccc])
    return out


def decompositions():
    """One-level canonical decompositions (cp, a, b) with b = 0 for singletons, and the indices
    of the primary composites sorted by (a, b)."""
    dec = []
    for cp in range(MAX_CP):
        d = ud.decomposition(chr(cp))
        if not d or d.startswith("<"):
            continue
        parts = [int(x, 16) for x in d.split()]
        assert len(parts) in (1, 2)
        assert len(ud.normalize("NFD", chr(cp))) <= 4  # the C decomposer's per-character bound
        dec.append((cp, parts[0], parts[1] if len(parts) == 2 else 0))
    # A decomposable character that survives NFC unchanged is recomposed by it: a primary
    # composite. Excluded ones (singletons, non-starter decompositions, CompositionExclusions.txt)
    # always come out of NFC as something else.
    comp = [i for i, (cp, a, b) in enumerate(dec) if b and ud.normalize("NFC", chr(cp)) == chr(cp)]
    comp.sort(key=lambda i: (dec[i][1], dec[i][2]))
    return dec, comp


def emit(name, ctype, rows, per_line, fmt):
    print(f"const {ctype} {name}[{len(rows)}] = {{")
    for i in range(0, len(rows), per_line):
        print("    " + " ".join(fmt(r) for r in rows[i : i + per_line]))
    print("};")
    print(f"const int {name}_count = {len(rows)};")
    print()


def main():
    classes = class_ranges()
    runs, multi = lower_runs()
    ccc = ccc_ranges()
    dec, comp = decompositions()
    assert len(dec) < 65536
    assert len(multi) <= 4 and all(len(m) <= 3 for _, m in multi)

    print(f"/* GENERATED by tools/gen_unicode_tables.py from Python {sys.version.split()[0]}'s")
    print(f" * unicodedata (Unicode {ud.unidata_version}). Do not edit; regenerate with")
    print(" *     python3 tools/gen_unicode_tables.py > text_encoder/unicode_tables.c */")
    print('#include "unicode_tables.h"')
    print()
    print(f'const char unicode_tables_version[] = "{ud.unidata_version}";')
    print()
    hx = lambda v: f"0x{v:X}"
    emit("unicode_class_ranges", "unicode_range", classes, 4,
         lambda r: f"{{{hx(r[0])}, {hx(r[1])}, {r[2]}}},")
    emit("unicode_lower_runs", "unicode_lower_run", runs, 3,
         lambda r: f"{{{hx(r[0])}, {hx(r[1])}, {r[2]}, {r[3]}}},")
    print(f"const unicode_lower_multi unicode_lower_multis[{len(multi)}] = {{")
    for cp, m in multi:
        print(f"    {{{hx(cp)}, {len(m)}, {{{', '.join(hx(c) for c in m)}}}}},")
    print("};")
    print(f"const int unicode_lower_multis_count = {len(multi)};")
    print()
    emit("unicode_ccc_ranges", "unicode_range", ccc, 4,
         lambda r: f"{{{hx(r[0])}, {hx(r[1])}, {r[2]}}},")
    emit("unicode_decomps", "unicode_decomp", dec, 4,
         lambda r: f"{{{hx(r[0])}, {hx(r[1])}, {hx(r[2])}}},")
    emit("unicode_compositions", "uint16_t", comp, 12, lambda i: f"{i},")


if __name__ == "__main__":
    main()
