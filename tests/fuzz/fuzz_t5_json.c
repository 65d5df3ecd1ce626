/* T5 unigram loading: tokenizer.json and a prompt (NUL-separated) as a tokenizer folder. */
#include <stdlib.h>

#include "../../text_encoder/t5_tokenizer.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *part[2];
    size_t len[2];
    fuzz_split(data, size, 2, part, len);
    if (!fuzz_file("tokenizer.json", part[0], len[0])) return 0;
    t5_tokenizer *t;
    if (t5_tokenizer_load(&t, fuzz_dir()) != SD_OK) return 0;
    char *text = fuzz_cstr(part[1], len[1]);
    int32_t *ids = NULL;
    int n = 0;
    if (t5_tokenize(t, text, &ids, &n) == SD_OK) free(ids);
    free(text);
    t5_tokenizer_free(t);
    return 0;
}
