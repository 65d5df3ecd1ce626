/* CLIP BPE loading: vocab.json, merges.txt, tokenizer_config.json and a prompt (NUL-separated)
 * as a tokenizer folder. */
#include <stdlib.h>

#include "../../text_encoder/clip_tokenizer.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *part[4];
    size_t len[4];
    fuzz_split(data, size, 4, part, len);
    if (!fuzz_file("vocab.json", part[0], len[0]) || !fuzz_file("merges.txt", part[1], len[1]) ||
        !fuzz_file("tokenizer_config.json", part[2], len[2]))
        return 0;
    clip_tokenizer *t;
    if (clip_tokenizer_load(&t, fuzz_dir()) != SD_OK) return 0;
    char *text = fuzz_cstr(part[3], len[3]);
    int32_t *ids = NULL;
    int n = 0;
    if (clip_tokenize(t, text, &ids, &n) == SD_OK) free(ids);
    free(text);
    clip_tokenizer_free(t);
    return 0;
}
