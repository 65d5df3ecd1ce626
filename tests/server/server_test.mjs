// sd-server integration test (issue 17's list but the web page): a live server on a free loopback
// port with the tiny SD 1.5 fixture, driven by the official `openai` client and by raw HTTP.
// Usage: node server_test.mjs BIN_DIR. Ends with "N passed, N failed" (tests/run.sh adds it up).
import { spawn, execFileSync } from 'node:child_process';
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import OpenAI, { toFile } from 'openai';

const binDir = path.resolve(process.argv[2] || 'bin');
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const models = path.join(root, 'tests/fixtures/sd15-tiny');
const KEY = 'test-key-' + process.pid;
let passed = 0, failed = 0;
function check(ok, what) {
  if (ok) passed++;
  else { failed++; console.log('FAIL ' + what); }
}

// ---- a PNG decoder (8-bit RGB/RGBA/grey, not interlaced): enough for what the server writes ----
function decodePng(buf) {
  if (buf.length < 8 || buf.readUInt32BE(0) !== 0x89504e47) throw new Error('not a PNG');
  let pos = 8, w = 0, h = 0, type = 0, idat = [];
  while (pos + 8 <= buf.length) {
    const n = buf.readUInt32BE(pos), kind = buf.toString('latin1', pos + 4, pos + 8);
    const body = buf.subarray(pos + 8, pos + 8 + n);
    if (kind === 'IHDR') {
      w = body.readUInt32BE(0); h = body.readUInt32BE(4); type = body[9];
      if (body[8] !== 8 || body[12] !== 0) throw new Error('unsupported PNG');
    } else if (kind === 'IDAT') idat.push(body);
    else if (kind === 'IEND') break;
    pos += 12 + n;
  }
  const bpp = { 0: 1, 2: 3, 4: 2, 6: 4 }[type];
  const raw = zlib.inflateSync(Buffer.concat(idat)), stride = w * bpp;
  const out = Buffer.alloc(w * h * 3), prev = Buffer.alloc(stride), line = Buffer.alloc(stride);
  for (let y = 0; y < h; y++) {
    const f = raw[y * (stride + 1)], src = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let i = 0; i < stride; i++) {
      const a = i >= bpp ? line[i - bpp] : 0, b = prev[i], c = i >= bpp ? prev[i - bpp] : 0;
      let p = a;
      if (f === 2) p = b; else if (f === 3) p = (a + b) >> 1; else if (f === 0) p = 0;
      else if (f === 4) {
        const pa = Math.abs(b - c), pb = Math.abs(a - c), pc = Math.abs(a + b - 2 * c);
        p = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      line[i] = (src[i] + p) & 255;
    }
    for (let x = 0; x < w; x++)
      for (let ch = 0; ch < 3; ch++) out[(y * w + x) * 3 + ch] = line[x * bpp + (bpp < 3 ? 0 : ch)];
    line.copy(prev);
  }
  return { w, h, rgb: out };
}

// ---- raw HTTP: a new connection per request (agent: false), so descriptors can be counted ----
let base = '';
function request(method, url, { body, headers = {}, key = KEY } = {}) {
  return new Promise((resolve) => {
    const h = { ...headers };
    if (key) h.Authorization = 'Bearer ' + key;
    let data = body;
    if (body !== undefined && typeof body !== 'string' && !Buffer.isBuffer(body)) {
      data = JSON.stringify(body);
      h['Content-Type'] = 'application/json';
    }
    if (data !== undefined) h['Content-Length'] = Buffer.byteLength(data);
    const t0 = performance.now();
    const req = http.request(base + url, { method, headers: h, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const buf = Buffer.concat(chunks);
        let json = null;
        try { json = JSON.parse(buf.toString()); } catch { /* not JSON */ }
        resolve({ status: res.statusCode, headers: res.headers, buf, json, ms: performance.now() - t0 });
      });
    });
    req.on('error', (e) => resolve({ status: 0, error: e, headers: {}, json: null, ms: 0 }));
    if (data !== undefined) req.write(data);
    req.end();
  });
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function startServer(args) {
  const child = spawn(path.join(binDir, 'sd-server'), args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error('no listening line; stderr: ' + stderr)), 20000);
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/^listening on (http:\/\/127\.0\.0\.1:\d+)$/m);
      if (m) { clearTimeout(timer); resolve({ child, url: m[1], stderr: () => stderr }); }
    });
    child.on('exit', (c) => reject(new Error('server exited ' + c + ': ' + stderr)));
  });
}

const rssKb = (pid) => +fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1];
const fdCount = (pid) => fs.readdirSync(`/proc/${pid}/fd`).length;
const b64png = (s) => decodePng(Buffer.from(s, 'base64'));

// An AddressSanitizer build (make test-asan): its timings and RSS say nothing about the server's.
const asan = fs.readFileSync(path.join(binDir, 'sd-server')).includes('__asan_init');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sd-server-test-'));
const srv = await startServer(['--port', '0', '--models', models, '--model', 'pipeline', '--api-key', KEY,
  '--queue', '2', '--max-body-mb', '1', '--max-steps', '60', '-q']);
base = srv.url;
const pid = srv.child.pid;

try {
  // ---- OpenAI client: b64_json with the extension fields, pixel-identical to gen ----
  const client = new OpenAI({ baseURL: base + '/v1', apiKey: KEY, maxRetries: 0 });
  const settings = { prompt: 'a lighthouse at dawn', negative_prompt: 'blurry', seed: 42, steps: 4,
    guidance_scale: 6.5, scheduler: 'euler' };
  const gen = await client.images.generate({ ...settings, model: 'pipeline', n: 1, size: '64x64',
    response_format: 'b64_json' });
  const mine = b64png(gen.data[0].b64_json);
  execFileSync(path.join(binDir, 'gen'), ['-m', path.join(models, 'pipeline'), '-q', '-s', '42', '--steps', '4',
    '-g', '6.5', '--scheduler', 'euler', '-n', 'blurry', '-W', '64', '-H', '64', '-o', path.join(tmp, 'gen.png'),
    settings.prompt]);
  const ref = decodePng(fs.readFileSync(path.join(tmp, 'gen.png')));
  check(mine.w === 64 && mine.h === 64 && mine.rgb.equals(ref.rgb), 'openai images.generate equals gen pixel for pixel');
  const page = await request('GET', '/', { key: null });
  check(page.status === 200 && page.buf.equals(fs.readFileSync(path.join(root, 'server/web/index.html'))) &&
    /^text\/html/.test(page.headers['content-type']), 'GET / serves server/web/index.html byte for byte, without a key');
  const models_ = await client.models.list();
  check(models_.data.some((m) => m.id === 'pipeline'), 'GET /v1/models lists the model');
  const urlRes = await client.images.generate({ prompt: 'a red fox', size: '64x64', steps: 2, seed: 1, response_format: 'url' });
  const file = await request('GET', new URL(urlRes.data[0].url).pathname, { key: null });
  check(file.status === 200 && decodePng(file.buf).w === 64, 'response_format url serves the PNG');
  try {
    await new OpenAI({ baseURL: base + '/v1', apiKey: 'wrong', maxRetries: 0 }).images.generate({ prompt: 'x' });
    check(false, 'a wrong key is refused');
  } catch (e) { check(e.status === 401 && /API key/.test(e.message), 'the client sees 401 with a message: ' + e.message); }

  // ---- A1111 txt2img and img2img, png-info ----
  const t2i = await request('POST', '/sdapi/v1/txt2img', { body: { prompt: 'a cat', seed: 7, steps: 4,
    width: 64, height: 64, sampler_name: 'DPM++ 2M', scheduler: 'Karras', cfg_scale: 7 } });
  const info = t2i.json && JSON.parse(t2i.json.info);
  check(t2i.status === 200 && t2i.json.images.length === 1 && b64png(t2i.json.images[0]).w === 64 &&
    info.seed === 7 && info.all_seeds[0] === 7 && /Steps: 4, Sampler: DPM\+\+ 2M/.test(info.infotexts[0]),
    'A1111 txt2img: ' + t2i.status + ' ' + (t2i.json && t2i.json.info));
  const pnginfo = await request('POST', '/sdapi/v1/png-info', { body: { image: t2i.json.images[0] } });
  check(pnginfo.status === 200 && pnginfo.json.parameters.Seed === '7' && pnginfo.json.parameters.Prompt === 'a cat',
    'png-info reads the parameters back: ' + pnginfo.buf);
  const i2i = await request('POST', '/sdapi/v1/img2img', { body: { prompt: 'a dog', seed: 3, steps: 4,
    init_images: ['data:image/png;base64,' + t2i.json.images[0]], denoising_strength: 0.5 } });
  check(i2i.status === 200 && b64png(i2i.json.images[0]).w === 64, 'A1111 img2img: ' + i2i.status + ' ' + (i2i.json && i2i.json.detail));
  // OpenAI edits: multipart split by server/multipart.c; image-to-image equals gen --init-image.
  const initPng = Buffer.from(t2i.json.images[0], 'base64');
  fs.writeFileSync(path.join(tmp, 'init.png'), initPng);
  const edit = await client.images.edit({ image: await toFile(initPng, 'init.png', { type: 'image/png' }),
    prompt: 'a dog', n: 1, size: '64x64', response_format: 'b64_json', seed: 3, steps: 4, strength: 0.6 });
  execFileSync(path.join(binDir, 'gen'), ['-m', path.join(models, 'pipeline'), '-q', '-s', '3', '--steps', '4',
    '--init-image', path.join(tmp, 'init.png'), '--strength', '0.6', '-o', path.join(tmp, 'edit.png'), 'a dog']);
  check(b64png(edit.data[0].b64_json).rgb.equals(decodePng(fs.readFileSync(path.join(tmp, 'edit.png'))).rgb),
    'openai images.edit (image-to-image) equals gen --init-image pixel for pixel');
  try {
    const inpaint = await client.images.edit({ image: await toFile(initPng, 'init.png', { type: 'image/png' }),
      mask: await toFile(initPng, 'mask.png', { type: 'image/png' }), prompt: 'a dog', steps: 2, seed: 1, size: '64x64' });
    check(b64png(inpaint.data[0].b64_json).w === 64, 'openai images.edit with a mask (inpainting)');
  } catch (e) { check(false, 'openai images.edit with a mask (inpainting): ' + e.message); }
  const noImage = await request('POST', '/v1/images/edits', { body: { prompt: 'x' } });
  check(noImage.status === 400 && noImage.json.error.message, 'edits without a form: 400 ' + noImage.buf);
  const second = await request('POST', '/sdapi/v1/txt2img', { body: { prompt: 'a cat', seed: 7, steps: 1, width: 64, height: 64 } });
  const timing = second.headers['server-timing'] || '';
  check(second.status === 200 && /load;dur=0\.0/.test(timing), 'a second request spends no time loading: ' + timing);
  const opts = await request('GET', '/sdapi/v1/options');
  check(opts.json && opts.json.sd_model_checkpoint === 'pipeline', 'options names the model');
  const setOpt = await request('POST', '/sdapi/v1/options', { body: { sd_model_checkpoint: 'pipeline [hash]' } });
  check(setOpt.status === 200, 'options sets the model');

  // ---- overhead beyond the generation: wall time minus the server's generation time ----
  // The server's share (Server-Timing total - gen: parsing, queueing, PNG, base64, JSON) is checked;
  // the client's wall time minus gen (node's side included) is printed.
  const over = [], wall = [];
  for (let i = 0; i < 7; i++) {
    const r = await request('POST', '/sdapi/v1/txt2img', { body: { prompt: 'a cat', seed: i, steps: 1, width: 64, height: 64 } });
    const t = (k) => +(new RegExp(k + ';dur=([\\d.]+)').exec(r.headers['server-timing']) || [0, NaN])[1];
    over.push(t('total') - t('gen'));
    wall.push(r.ms - t('gen'));
  }
  over.sort((a, b) => a - b), wall.sort((a, b) => a - b);
  console.log(`overhead beyond generation, 64x64: server median ${over[3].toFixed(2)} ms (min ${over[0].toFixed(2)}), ` +
    `client wall median ${wall[3].toFixed(2)} ms (min ${wall[0].toFixed(2)})`);
  // The fastest of 7: the server's own cost. The median moves with whatever else the machine runs
  // (other builds on 2 shared cores took it from 0.6 to 16 ms while the fastest stayed under 1).
  if (asan) console.log('overhead check skipped: an AddressSanitizer build');
  else check(over[0] < 5, 'the server adds under 5 ms per request: ' + over.map((x) => x.toFixed(2)).join(','));

  // ---- progress rises with a preview; interrupt stops a 50-step run early ----
  const long = request('POST', '/sdapi/v1/txt2img', { body: { prompt: 'a castle', seed: 5, steps: 50, width: 256, height: 256 } });
  const steps = [];
  let preview = null;
  for (let i = 0; i < 300 && new Set(steps).size < 3; i++) {
    await sleep(30);
    const p = await request('GET', '/sdapi/v1/progress');
    if (p.json && p.json.state.sampling_step > 0) {
      steps.push(p.json.state.sampling_step);
      if (p.json.current_image) preview = p.json.current_image;
    }
  }
  check(steps.length >= 2 && steps[steps.length - 1] > steps[0], 'progress rises: ' + steps.join(','));
  let pv = null;
  try { pv = b64png(preview); } catch { /* checked below */ }
  check(pv && pv.w === 32 && pv.h === 32, 'the progress preview decodes (a 32x32 latent preview)');
  await request('POST', '/sdapi/v1/interrupt');
  const stopped = await long;
  const sinfo = stopped.json && JSON.parse(stopped.json.info);
  check(stopped.status === 200 && sinfo.interrupted === true && stopped.json.images.length === 0,
    'interrupt stops the 50-step run early: ' + stopped.status + ' ' + (stopped.json && stopped.json.info));

  // ---- bad requests: the right 4xx with a message, and the server keeps serving ----
  const bad = [
    ['malformed JSON', 'POST', '/sdapi/v1/txt2img', '{"prompt": "x",,}', 400],
    ['truncated JSON', 'POST', '/sdapi/v1/txt2img', '{"prompt": "x", "steps": 4', 400],
    ['wrong type', 'POST', '/sdapi/v1/txt2img', { prompt: 'x', steps: 'many' }, 400],
    ['missing prompt', 'POST', '/sdapi/v1/txt2img', { steps: 4 }, 400],
    ['size 0', 'POST', '/sdapi/v1/txt2img', { prompt: 'x', width: 0, height: 0 }, 400],
    ['size 100000', 'POST', '/sdapi/v1/txt2img', { prompt: 'x', width: 100000, height: 100000 }, 400],
    ['openai size 0', 'POST', '/v1/images/generations', { prompt: 'x', size: '0x0' }, 400],
    ['openai size 100000', 'POST', '/v1/images/generations', { prompt: 'x', size: '100000x100000' }, 400],
    ['unknown sampler', 'POST', '/sdapi/v1/txt2img', { prompt: 'x', sampler_name: 'Nonesuch' }, 400],
    ['unknown model', 'POST', '/v1/images/generations', { prompt: 'x', model: 'nonesuch' }, 404],
    ['../ in a model name', 'POST', '/sdapi/v1/txt2img', { prompt: 'x', override_settings: { sd_model_checkpoint: '../sd15-tiny/pipeline' } }, 400],
    ['../ in the options', 'POST', '/sdapi/v1/options', { sd_model_checkpoint: '../../etc' }, 400],
    ['oversized body', 'POST', '/sdapi/v1/txt2img', JSON.stringify({ prompt: 'x'.repeat(2 << 20) }), 413],
    ['missing API key', 'POST', '/sdapi/v1/txt2img', { prompt: 'x' }, 401, null],
    ['wrong API key', 'GET', '/v1/models', undefined, 401, 'nope'],
    ['no such endpoint', 'GET', '/sdapi/v1/nonesuch', undefined, 404],
    ['wrong method', 'GET', '/sdapi/v1/txt2img', undefined, 405],
  ];
  for (const [what, method, url, body, status, key] of bad) {
    const opts = { body };
    if (typeof body === 'string') opts.headers = { 'Content-Type': 'application/json' };
    if (key !== undefined) opts.key = key;
    const r = await request(method, url, opts);
    const msg = r.json && (url.startsWith('/v1/') ? r.json.error && r.json.error.message : r.json.detail);
    const shape = !url.startsWith('/v1/') || (r.json && r.json.error && 'type' in r.json.error && 'param' in r.json.error && 'code' in r.json.error);
    check(r.status === status && msg && shape, `${what}: ${r.status} (want ${status}) ${msg}`);
  }
  const deep = await request('POST', '/sdapi/v1/txt2img',
    { body: '['.repeat(100000) + ']'.repeat(100000), headers: { 'Content-Type': 'application/json' } });
  check(deep.status === 400 && deep.json && /nested deeper/.test(deep.json.detail),
    'JSON nested 10^5 deep: 400 saying so: ' + deep.status + ' ' + (deep.json && deep.json.detail));
  const still = await request('POST', '/sdapi/v1/txt2img', { body: { prompt: 'a cat', steps: 1, width: 64, height: 64 } });
  check(still.status === 200, 'the server keeps serving after the bad requests');

  // ---- bounded load: 8 clients x 4 requests, queue 2: 200 or 503 + Retry-After ----
  const load = async () => {
    const statuses = [];
    await Promise.all(Array.from({ length: 8 }, async (_, c) => {
      for (let i = 0; i < 4; i++) {
        const r = await request('POST', '/sdapi/v1/txt2img', { body: { prompt: 'load ' + c, seed: i, steps: 2, width: 64, height: 64 } });
        statuses.push(r.status === 200 || (r.status === 503 && +r.headers['retry-after'] >= 1) ? r.status : 'bad ' + r.status);
      }
    }));
    return statuses;
  };
  await load(); // warm: the connection threads' allocator arenas exist from here on
  await sleep(200);
  const rss0 = rssKb(pid), fd0 = fdCount(pid);
  const statuses = await load();
  await sleep(300);
  const rss1 = rssKb(pid), fd1 = fdCount(pid);
  check(statuses.length === 32 && statuses.every((s) => s === 200 || s === 503),
    'every request of the load got 200 or 503 + Retry-After: ' + statuses.join(','));
  check(statuses.includes(200) && statuses.includes(503), 'the load both ran and queued out requests');
  console.log(`load: ${statuses.filter((s) => s === 200).length} x 200, ${statuses.filter((s) => s === 503).length} x 503; RSS ${rss0} -> ${rss1} kB; fds ${fd0} -> ${fd1}`);
  // Under AddressSanitizer (make test-asan) freed memory waits in its quarantine by design, so
  // RSS says nothing there; LeakSanitizer at the SIGTERM exit below checks for leaks instead.
  if (asan) console.log('RSS check skipped: an AddressSanitizer build (its leak check runs at exit)');
  else check(Math.abs(rss1 - rss0) <= 0.05 * rss0, `RSS back within 5% of its baseline: ${rss0} -> ${rss1} kB`);
  check(fd1 <= fd0, `no descriptor leak: ${fd0} -> ${fd1}`);

  // ---- a client that goes away cancels its job ----
  const gone = http.request(base + '/sdapi/v1/txt2img', { method: 'POST', agent: false,
    headers: { Authorization: 'Bearer ' + KEY, 'Content-Type': 'application/json' } });
  gone.on('error', () => {});
  gone.end(JSON.stringify({ prompt: 'a castle', seed: 5, steps: 60, width: 256, height: 256 }));
  await sleep(300);
  gone.destroy();
  // Cancelled, not finished: the job goes idle well before its 60th step. Up to 15 s, so a
  // machine slowed by other work still passes; a job that ran on to the end shows a late step.
  let idle = false, lastStep = 0;
  for (let i = 0; i < 300 && !idle; i++) {
    await sleep(50);
    const p = await request('GET', '/sdapi/v1/progress?skip_current_image=true');
    idle = p.json && p.json.state.job_count === 0;
    if (p.json && !idle) lastStep = p.json.state.sampling_step;
  }
  check(idle && lastStep < 40, `a disconnected client's job is cancelled (idle ${idle}, last step seen ${lastStep} of 60)`);
} catch (e) {
  check(false, 'exception: ' + (e.stack || e));
}

// ---- safe by default: no key off loopback refuses to start; CORS only when asked ----
try {
  const modelArgs = ['--models', models, '--model', 'pipeline', '-q'];
  let refused = null;
  try { execFileSync(path.join(binDir, 'sd-server'), ['--listen', '0.0.0.0', '--port', '0', ...modelArgs], { stdio: 'pipe' }); }
  catch (e) { refused = e; }
  check(refused && refused.status === 2 && /--api-key/.test(refused.stderr), 'a non-loopback address without --api-key refuses to start');
  let both = null; // paging on and off at once (issue 19): a command-line error naming both
  try { execFileSync(path.join(binDir, 'sd-server'), ['--port', '0', '--low-memory', '--keep-resident', ...modelArgs], { stdio: 'pipe' }); }
  catch (e) { both = e; }
  check(both && both.status === 2 && /--low-memory/.test(both.stderr) && /--keep-resident/.test(both.stderr),
    '--low-memory with --keep-resident refuses to start');
  const noCors = await request('GET', '/v1/models', { headers: { Origin: 'http://example.test' } });
  check(noCors.status === 200 && !('access-control-allow-origin' in noCors.headers), 'no CORS header unless --cors');
  const cors = await startServer(['--port', '0', '--cors', 'http://example.test', ...modelArgs]);
  const saved = base;
  base = cors.url;
  const pre = await request('OPTIONS', '/v1/images/generations', { key: null, headers: { Origin: 'http://example.test',
    'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'authorization, content-type' } });
  const get = await request('GET', '/sdapi/v1/samplers', { headers: { Origin: 'http://example.test' } });
  check(pre.status === 204 && pre.headers['access-control-allow-origin'] === 'http://example.test' &&
    /Authorization/.test(pre.headers['access-control-allow-headers']) && /POST/.test(pre.headers['access-control-allow-methods']),
    '--cors answers the preflight: ' + JSON.stringify(pre.headers));
  check(get.status === 200 && get.headers['access-control-allow-origin'] === 'http://example.test', '--cors marks replies');
  base = saved;
  cors.child.kill('SIGTERM');
} catch (e) {
  check(false, 'exception: ' + (e.stack || e));
}

// ---- SIGTERM: the running job stops, the server exits 0 ----
const running = request('POST', '/sdapi/v1/txt2img', { body: { prompt: 'a castle', steps: 50, width: 256, height: 256 } });
// SIGTERM once the job is running (a fixed sleep raced a loaded machine: the request was not yet
// queued, and a connection the server never answered came back as status 0)
for (let i = 0; i < 300; i++) {
  await sleep(30);
  const p = await request('GET', '/sdapi/v1/progress?skip_current_image=true');
  if (p.json && p.json.state.sampling_step > 0) break;
}
const exited = new Promise((r) => srv.child.on('exit', (code) => r(code)));
srv.child.kill('SIGTERM');
const t0 = Date.now();
const code = await Promise.race([exited, sleep(10000).then(() => 'timeout')]);
const last = await running;
check(code === 0 && Date.now() - t0 < 5000, 'SIGTERM: the server exits 0 promptly (' + code + ')' +
  (code ? ': ' + srv.stderr().slice(-2000) : ''));
check(last.status === 503, 'the running job is answered 503 at shutdown: ' + last.status);

// ---- --vae-tiny: the progress preview is the tiny VAE's full-size decode ----
const tiny = await startServer(['--port', '0', '--models', models, '--model', 'pipeline', '-q',
  '--vae-tiny', path.join(root, 'tests/fixtures/extra/taesd-tiny')]);
base = tiny.url;
const tinyRun = request('POST', '/sdapi/v1/txt2img', { body: { prompt: 'a castle', seed: 5, steps: 50, width: 256, height: 192 } });
let tinyPv = null;
for (let i = 0; i < 300 && !tinyPv; i++) {
  await sleep(30);
  const p = await request('GET', '/sdapi/v1/progress');
  if (p.json && p.json.current_image) tinyPv = p.json.current_image;
}
let tpv = null;
try { tpv = b64png(tinyPv); } catch { /* checked below */ }
check(tpv && tpv.w === 256 && tpv.h === 192, '--vae-tiny: the progress preview is a 256x192 decode' +
  (tpv ? ` (${tpv.w}x${tpv.h})` : ''));
await request('POST', '/sdapi/v1/interrupt');
const tinyDone = await tinyRun;
check(tinyDone.status === 200, '--vae-tiny server interrupted: ' + tinyDone.status);
const tinyExit = new Promise((r) => tiny.child.on('exit', (c) => r(c)));
tiny.child.kill('SIGTERM');
check(await Promise.race([tinyExit, sleep(10000).then(() => 'timeout')]) === 0, '--vae-tiny server exits 0');
fs.rmSync(tmp, { recursive: true, force: true });
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
