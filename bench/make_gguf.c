/* Writes a GGUF file of a model's safetensors weights quantized with ggml's reference
 * quantizers (tests/gguf_writer.c), for the memory and speed benchmarks of GGUF runs:
 *
 *   build/bench/make_gguf SRC.safetensors DST.gguf [--q4k]
 *
 * As city96's and stable-diffusion.cpp's converters do: matrices whose rows are a multiple of 32
 * values as Q8_0 (with --q4k, of 256 as Q4_K first), other matrices (3x3 convolutions) F16,
 * vectors (biases, norms) F32. */
#include <stdio.h>
#include <string.h>

#include "../tests/gguf_writer.h"

int main(int argc, char **argv) {
    if (argc < 3 || argc > 4 || (argc == 4 && strcmp(argv[3], "--q4k"))) {
        fprintf(stderr, "usage: %s SRC.safetensors DST.gguf [--q4k]\n", argv[0]);
        return 2;
    }
    int counts[4];
    if (!gw_convert_as(argv[1], argv[2], NULL, argc == 4, counts)) {
        fprintf(stderr, "%s: could not convert %s\n", argv[2], argv[1]);
        return 1;
    }
    printf("%s: %d Q4_K, %d Q8_0, %d F16, %d F32 tensors\n", argv[2], counts[0], counts[1],
           counts[2], counts[3]);
    return 0;
}
