// Token ids of the bundled T5 tokenizer (configs/t5-tokenizer: FLUX.1-dev's tokenizer_2,
// t5-v1_1-xxl's 32100 pieces) from Hugging Face's JavaScript port (transformers.js, whose
// tokenizers come from @huggingface/tokenizers): an implementation independent of ours and of
// the Rust tokenizers that transformers' T5TokenizerFast wraps. Writes the file that
// tools/reference/t5_vocab_refs.py writes (same prompts, same fields), for
// tests/test_t5_bundled.c, until a device session replaces it with transformers' own ids.
//
//   mkdir /tmp/t5js && (cd /tmp/t5js && npm init -y && npm install --ignore-scripts @huggingface/transformers)
//   node tools/reference/t5_vocab_js.mjs /tmp/t5js tests/fixtures/extra/t5_vocab_refs.json
//
// (--ignore-scripts: the tokenizer needs no ONNX runtime, whose install script downloads one.)
// Run from the repository root. The package is found in the scratch folder given, never here.
import fs from 'node:fs';
import zlib from 'node:zlib';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

const [scratch, out] = process.argv.slice(2);
if (!scratch || !out) {
    console.error('usage: node tools/reference/t5_vocab_js.mjs NPM_SCRATCH_DIR OUT.json');
    process.exit(2);
}
const require = createRequire(`${scratch}/package.json`);
const entry = require.resolve('@huggingface/transformers');
const { T5Tokenizer } = await import(pathToFileURL(entry).href);
const version = (name) => JSON.parse(fs.readFileSync(`${scratch}/node_modules/${name}/package.json`)).version;

const SRC = 'configs/t5-tokenizer';
const tokenizerJSON = JSON.parse(zlib.gunzipSync(fs.readFileSync(`${SRC}/tokenizer.json.gz`)).toString('utf8'));
// transformers reads special_tokens_map.json over tokenizer_config.json (its keys win); the
// port takes a token as a string (the map writes {"content": ...} objects).
const config = JSON.parse(fs.readFileSync(`${SRC}/tokenizer_config.json`, 'utf8'));
const map = JSON.parse(fs.readFileSync(`${SRC}/special_tokens_map.json`, 'utf8'));
for (const [k, v] of Object.entries(map)) config[k] = v && typeof v === 'object' && !Array.isArray(v) ? v.content : v;
const tok = new T5Tokenizer(tokenizerJSON, config);

// t5_vocab_refs.py's EXTRA, character for character: keep the two lists the same.
const EXTRA = [
    'a lighthouse at dawn, oil painting, highly detailed, 8k',
    'Déjà vu: café naïve résumé — “quotes” and ‘single’ …',
    '1234567890 3.14159 1,000,000 $99.99 50% #hashtag @user',
    '!!!??? ((masterpiece)), [blurry], {braces} <angle> | pipe \\ backslash',
    '東京タワー 夜景 北京 서울',
    'emoji 🐱🚀 and ﬁ ligature, full-width ＡＢＣ１２３',
    'tab\tnew\nline   multiple    spaces',
    '<extra_id_0> sentinel <extra_id_99> and </s> inside',
    'Photorealistic portrait of an elderly fisherman, weathered skin, dramatic rim lighting, shallow depth of field, 85mm lens',
    'UPPER lower MiXeD cAsE',
];

const prompts = JSON.parse(fs.readFileSync('tests/fixtures/t5_tokenizer_cases.json', 'utf8')).cases.map((c) => c.prompt);
for (const p of EXTRA) if (!prompts.includes(p)) prompts.push(p);

const eos = tok.eos_token_id, pad = tok.pad_token_id;
const cases = prompts.map((prompt) => {
    const ids = tok.encode(prompt); // with </s>, as tok(p).input_ids
    // tok(p, padding="max_length", max_length=77, truncation=True) as transformers (Python) does
    // it: the text's tokens cut to 76, then </s>, then <pad>. The JS port's own truncation
    // (truncateHelper) slices the ids after </s> is added, so a long prompt would lose its </s>:
    // a difference of the port, not of the vocabulary, so the padded ids are derived here.
    const body = ids.slice(0, ids.length - 1).slice(0, 76);
    const padded77 = [...body, eos];
    while (padded77.length < 77) padded77.push(pad);
    return { prompt, ids, padded77 };
});

const doc = {
    tokenizer: 'T5TokenizerFast',
    source: `transformers.js ${version('@huggingface/transformers')} (@huggingface/tokenizers ` +
        `${version('@huggingface/tokenizers')}), tools/reference/t5_vocab_js.mjs: the JavaScript ` +
        'port until tools/reference/t5_vocab_refs.py (transformers, on the device) replaces it',
    vocab_size: tok.get_vocab().size, // a Map: pieces and added tokens, as len(tok)
    cases,
};
// json.dump(..., indent=0) as the Python script writes it: one value per line, no indentation.
const text = JSON.stringify(doc, null, 1).split('\n').map((l) => l.replace(/^ +/, '')).join('\n');
fs.writeFileSync(out, text);
console.log(`${cases.length} cases, ${doc.vocab_size} tokens`);
