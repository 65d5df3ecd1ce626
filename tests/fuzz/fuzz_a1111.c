/* A1111's prompt syntax: editing/alternation schedules and emphasis parsing. The first byte picks
 * the step count (1..256) so schedules of every length are tried. */
#include <stdlib.h>

#include "../../text_encoder/a1111_prompt.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int steps = data[0] + 1;
    char *text = fuzz_cstr(data + 1, size - 1);
    a1111_sched_entry *e = NULL;
    int n = 0;
    if (a1111_schedule(text, steps, &e, &n) == SD_OK) {
        for (int s = 1; s <= steps; s++) (void)a1111_schedule_pick(e, n, s);
        for (int i = 0; i < n; i++) {
            a1111_piece *p = NULL;
            int np = 0;
            if (a1111_parse_attention(e[i].text, &p, &np) == SD_OK) {
                free(a1111_plain_text(p, np));
                a1111_pieces_free(p, np);
            }
        }
        a1111_schedule_free(e, n);
    }
    free(text);
    return 0;
}
