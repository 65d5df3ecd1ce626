/* T5 unigram on prompts: the tiny fixture's tokenizer.json (the real T5 normalizer, pre-tokenizer
 * and vocabulary) tokenizing any text. */
#include <stdio.h>
#include <stdlib.h>

#include "../../text_encoder/t5_tokenizer.h"
#include "fuzz.h"

static t5_tokenizer *g_tok;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_tok) {
        char dir[600];
        snprintf(dir, sizeof(dir), "%s/tests/fixtures/sd3t5-tiny/pipeline/tokenizer_3", fuzz_root());
        if (t5_tokenizer_load(&g_tok, dir) != SD_OK) abort();
    }
    char *text = fuzz_cstr(data, size);
    int32_t *ids = NULL;
    int n = 0;
    if (t5_tokenize(g_tok, text, &ids, &n) == SD_OK) free(ids);
    free(text);
    return 0;
}
