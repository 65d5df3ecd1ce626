"""Token ids of FLUX's / SD3's real T5 tokenizer (configs/t5-tokenizer: t5-v1_1-xxl's, 32100 pieces), as
transformers' T5TokenizerFast gives them, for the bundled tokenizer's test (tests/test_t5_bundled.c):

    python3 tools/reference/t5_vocab_refs.py OUT.json

The prompts are those of tests/fixtures/t5_tokenizer_cases.json plus text that needs the real
vocabulary (accents, numbers, punctuation runs, CJK the vocabulary lacks, extra_id tokens)."""
import gzip
import json
import os
import shutil
import sys
import tempfile

from transformers import T5TokenizerFast

SRC = "configs/t5-tokenizer"
EXTRA = [
    "a lighthouse at dawn, oil painting, highly detailed, 8k",
    "Déjà vu: café naïve résumé — “quotes” and ‘single’ …",
    "1234567890 3.14159 1,000,000 $99.99 50% #hashtag @user",
    "!!!??? ((masterpiece)), [blurry], {braces} <angle> | pipe \\ backslash",
    "東京タワー 夜景 北京 서울",
    "emoji 🐱🚀 and ﬁ ligature, full-width ＡＢＣ１２３",
    "tab\tnew\nline   multiple    spaces",
    "<extra_id_0> sentinel <extra_id_99> and </s> inside",
    "Photorealistic portrait of an elderly fisherman, weathered skin, dramatic rim lighting, shallow depth of field, 85mm lens",
    "UPPER lower MiXeD cAsE",
]

if __name__ == "__main__":
    tmp = tempfile.mkdtemp()
    with gzip.open(f"{SRC}/tokenizer.json.gz") as f, open(f"{tmp}/tokenizer.json", "wb") as g:
        shutil.copyfileobj(f, g)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(f"{SRC}/{name}", tmp)
    tok = T5TokenizerFast.from_pretrained(tmp)
    prompts = [c["prompt"] for c in json.load(open("tests/fixtures/t5_tokenizer_cases.json"))["cases"]]
    prompts += [p for p in EXTRA if p not in prompts]
    cases = []
    for p in prompts:
        ids = tok(p).input_ids
        pad = tok(p, padding="max_length", max_length=77, truncation=True).input_ids
        cases.append(dict(prompt=p, ids=ids, padded77=pad))
    json.dump(dict(tokenizer=type(tok).__name__, vocab_size=len(tok), cases=cases),
              open(sys.argv[1], "w"), ensure_ascii=False, indent=0)
    print(len(cases), "cases", len(tok), "tokens")
