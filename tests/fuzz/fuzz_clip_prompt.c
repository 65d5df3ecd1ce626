/* CLIP BPE on prompts: the real vocabulary (configs/clip-bpe) tokenizing any text, plain and
 * padded, and A1111's chunking of the same text. */
#include <stdio.h>
#include <stdlib.h>

#include "../../text_encoder/a1111_prompt.h"
#include "../../text_encoder/clip_tokenizer.h"
#include "fuzz.h"

static clip_tokenizer *g_tok;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_tok) {
        char dir[600];
        snprintf(dir, sizeof(dir), "%s/tests/fixtures/clip_tokenizer", fuzz_root());
        if (clip_tokenizer_load(&g_tok, dir) != SD_OK) abort();
    }
    char *text = fuzz_cstr(data, size);
    int32_t *ids = NULL;
    int n = 0;
    if (clip_tokenize(g_tok, text, &ids, &n) == SD_OK) free(ids);
    int32_t padded[77];
    (void)clip_tokenize_padded(g_tok, text, padded, 77);
    a1111_chunks c;
    if (a1111_chunk(g_tok, text, NULL, 0, &c) == SD_OK) a1111_chunks_free(&c);
    free(text);
    return 0;
}
