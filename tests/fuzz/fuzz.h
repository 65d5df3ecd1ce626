/* Shared by the libFuzzer harnesses (tests/fuzz/fuzz_*.c) and their replay in make test
 * (tests/test_fuzz_regress.c). Most loaders read files by path, as they do in use, so a harness
 * writes its input into a private temporary folder and hands the loader that path: the parser
 * under test is the real one, mmap included. Several files in one input are separated by a NUL
 * byte (JSON and text parsers never see one inside their own file). */
#ifndef SD_FUZZ_H
#define SD_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* Every harness, fuzz_<name>.c. make test replays each one's corpus and regression inputs
 * (tests/test_fuzz_regress.c), where each file is compiled with its entry point renamed to
 * fuzz_entry_<name>; a harness missing here is reported there. */
#define FUZZ_HARNESSES(X)                                                                          \
    X(a1111) X(clip_prompt) X(clip_vocab) X(config) X(jpeg) X(lora) X(png) X(request)              \
    X(safetensors) X(single_file) X(t5_json) X(t5_prompt) X(embedding) X(multipart) X(handlers)    \
    X(gguf)

/* The harness entry point every fuzz_*.c defines (libFuzzer's signature). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A folder of this process's own, made on first use and removed at exit. */
const char *fuzz_dir(void);
/* Writes data into fuzz_dir()/name (replacing it) and returns the path (static storage, valid
 * until the next call); NULL when the write failed (the harness then skips the input). */
const char *fuzz_file(const char *name, const uint8_t *data, size_t size);
/* A malloc'd NUL-terminated copy of data (the text parsers take C strings). */
char *fuzz_cstr(const uint8_t *data, size_t size);
/* Splits data at its first n - 1 NUL bytes: part[i], len[i] (missing parts are empty). */
void fuzz_split(const uint8_t *data, size_t size, int n, const uint8_t **part, size_t *len);
/* sd-server's image temporary folder (srv_images_init), made once per process and removed at
 * exit: the server harnesses decode images through it, as the server does. */
void fuzz_server_init(void);
/* The source tree (fixtures: the real CLIP vocabulary, the tiny T5 tokenizer). */
const char *fuzz_root(void);

#endif
