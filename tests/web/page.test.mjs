// The web page sd-server serves at GET /, driven in headless Chromium (puppeteer-core) against the
// real bin/sd-server on the tiny SD 1.5 fixture: type a prompt, fix the seed, press Generate, and
// check the page shows exactly the image the A1111 API returns for the very request the page sent;
// then a long run, whose progress bar must move and which Interrupt must stop early; then a request
// image to image with an uploaded image and mask; a request the server refuses, whose message the
// page must show; then a server started with --api-key.
// Keeps a screenshot in build/web-page.png.
// Prints failures and ends with "N passed, N failed" (tests/run.sh adds it up). Run by test_web.sh.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';
import puppeteer from 'puppeteer-core';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const server = path.resolve(root, process.env.SD_BIN_DIR || 'bin', 'sd-server');
const model = path.join(root, 'tests/fixtures/sd15-tiny/pipeline');
const chromium = process.env.CHROMIUM || '/usr/bin/chromium';
const screenshot = path.join(root, 'build/web-page.png');

let passed = 0, failed = 0;
function check(ok, what) {
  if (ok) passed++;
  else { failed++; console.log('FAIL ' + what); }
  return ok;
}
function finish() {
  console.log(passed + ' passed, ' + failed + ' failed');
  process.exit(failed ? 1 : 0);
}

// ---- PNG decoding (8-bit grey/RGB/RGBA, not interlaced: what the server writes), so the two
// images are compared by their pixels, independent of how each was compressed or annotated.
function paeth(a, b, c) {
  const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}
function decodePng(buf) {
  if (buf.length < 8 || buf.readUInt32BE(0) !== 0x89504e47) throw new Error('not a PNG');
  let off = 8, w = 0, h = 0, depth = 0, type = 0, interlace = 0;
  const idat = [], text = {};
  while (off + 8 <= buf.length) {
    const len = buf.readUInt32BE(off), name = buf.toString('latin1', off + 4, off + 8);
    const data = buf.subarray(off + 8, off + 8 + len);
    if (name === 'IHDR') { w = data.readUInt32BE(0); h = data.readUInt32BE(4); depth = data[8]; type = data[9]; interlace = data[12]; }
    else if (name === 'IDAT') idat.push(data);
    else if (name === 'tEXt') { const z = data.indexOf(0); text[data.toString('latin1', 0, z)] = data.toString('latin1', z + 1); }
    else if (name === 'iTXt') {
      const z = data.indexOf(0), key = data.toString('latin1', 0, z);
      let p = z + 3; p = data.indexOf(0, p) + 1; p = data.indexOf(0, p) + 1; // language, translated keyword
      text[key] = (data[z + 1] ? zlib.inflateSync(data.subarray(p)) : data.subarray(p)).toString('utf8');
    }
    off += 12 + len;
  }
  const channels = { 0: 1, 2: 3, 6: 4 }[type];
  if (depth !== 8 || !channels || interlace) throw new Error(`PNG kind not handled: depth ${depth} type ${type} interlace ${interlace}`);
  const raw = zlib.inflateSync(Buffer.concat(idat)), stride = w * channels;
  const px = Buffer.alloc(stride * h);
  for (let y = 0; y < h; y++) {
    const f = raw[y * (stride + 1)], src = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let x = 0; x < stride; x++) {
      const a = x >= channels ? px[y * stride + x - channels] : 0, b = y ? px[(y - 1) * stride + x] : 0;
      const c = x >= channels && y ? px[(y - 1) * stride + x - channels] : 0;
      const pred = [0, a, b, (a + b) >> 1, paeth(a, b, c)][f];
      if (pred === undefined) throw new Error('bad PNG filter ' + f);
      px[y * stride + x] = (src[x] + pred) & 255;
    }
  }
  return { w, h, channels, px, text };
}

// ---- the server
function startServer(args) {
  return new Promise((resolve, reject) => {
    const p = spawn(server, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', done = false;
    const timer = setTimeout(() => fail('did not print "listening on http://..." within 60 s'), 60000);
    function fail(why) {
      if (done) return;
      done = true; clearTimeout(timer); p.kill('SIGKILL');
      reject(new Error(`${server} ${args.join(' ')} ${why}\n${out}`));
    }
    const onData = (d) => {
      out += d;
      const m = /listening on (http:\/\/[^\s]+)/.exec(out);
      if (m && !done) { done = true; clearTimeout(timer); resolve({ proc: p, url: m[1].replace(/\/$/, ''), log: () => out }); }
    };
    p.stdout.on('data', onData);
    p.stderr.on('data', onData);
    p.on('error', (e) => fail('could not start: ' + e.message));
    p.on('exit', (code, sig) => fail(`exited (status ${code}, signal ${sig}) before listening`));
  });
}

function stopServer(srv) {
  return new Promise((resolve) => {
    if (srv.proc.exitCode !== null) return resolve(srv.proc.exitCode);
    const t = setTimeout(() => srv.proc.kill('SIGKILL'), 15000);
    srv.proc.removeAllListeners('exit');
    srv.proc.on('exit', (code, sig) => { clearTimeout(t); resolve(sig || code); });
    srv.proc.kill('SIGTERM');
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Replaces a field's text the way a person does: focus, select all, type.
async function fill(page, sel, value) {
  await page.focus(sel);
  await page.keyboard.down('Control'); await page.keyboard.press('KeyA'); await page.keyboard.up('Control');
  await page.keyboard.type(String(value));
}

// The bytes behind an <img>/<a> URL of the page (a blob: URL), as base64.
function pageBytes(page, sel, attr) {
  return page.$eval(sel, async (el, attr) => {
    const b = new Uint8Array(await (await fetch(el.getAttribute(attr))).arrayBuffer());
    let s = '';
    for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode(...b.subarray(i, i + 0x8000));
    return btoa(s);
  }, attr);
}

async function main() {
  if (!fs.existsSync(server)) { check(false, `${server} is missing (make builds it)`); return; }
  const srv = await startServer(['--model', model, '--port', '0']);
  const browser = await puppeteer.launch({
    executablePath: chromium, headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  try {
    await run(srv, browser);
    await runWithKey(browser);
  } finally {
    await browser.close();
    const st = await stopServer(srv);
    check(st === 0, `sd-server did not exit cleanly on SIGTERM (${st}); its log:\n${srv.log()}`);
  }
}

async function run(srv, browser) {
  const page = await browser.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  // (A refused request's own status line in the console is expected, not a page error.)
  page.on('console', (m) => { if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) pageErrors.push(m.text()); });
  const sent = [];
  const sentImg2img = [];
  page.on('request', (r) => {
    if (r.url().endsWith('/sdapi/v1/txt2img')) sent.push(r.postData());
    if (r.url().endsWith('/sdapi/v1/img2img')) sentImg2img.push(r.postData());
  });
  await page.setViewport({ width: 1280, height: 860 });

  const resp = await page.goto(srv.url + '/');
  check(resp.status() === 200 && /html/.test(resp.headers()['content-type'] || ''), `GET / answered ${resp.status()} ${resp.headers()['content-type']}`);
  await page.waitForFunction(() => document.getElementById('sampler').options.length > 0, { timeout: 15000 });
  check(await page.$eval('#conn', (e) => e.dataset.ok) === '1', 'the page did not connect to the API: ' + await page.$eval('#conn', (e) => e.textContent));
  const samplers = await page.$$eval('#sampler option', (os) => os.map((o) => o.value));
  check(samplers.includes('Euler a'), 'sampler list without "Euler a": ' + samplers.join(', '));
  // Every control has a label (by <label for>, an aria-label, or being a button with text).
  const unlabelled = await page.$$eval('input, select, textarea, button', (els) => els
    .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !(e.tagName === 'BUTTON' && e.textContent.trim()))
    .map((e) => e.id || e.outerHTML.slice(0, 60)));
  check(unlabelled.length === 0, 'controls without a label: ' + unlabelled.join(', '));

  // ---- 1. a small fixed-seed run: the page's image is the API's image for the same request
  await fill(page, '#prompt', 'a lighthouse at dawn, oil painting');
  await fill(page, '#negative', 'blurry');
  await fill(page, '#seed', 42);
  await fill(page, '#width', 64);
  await fill(page, '#height', 64);
  await fill(page, '#steps', 4);
  await page.select('#sampler', 'Euler a');
  await page.click('#generate');
  await page.waitForFunction(() => document.body.dataset.state !== 'running', { timeout: 120000 });
  const state = await page.evaluate(() => document.body.dataset.state);
  if (!check(state === 'done', `first run ended "${state}": ${await page.$eval('#error-text', (e) => e.textContent)}`)) return;
  check(sent.length === 1, `the page sent ${sent.length} txt2img requests`);
  const req = JSON.parse(sent[0]);
  check(req.seed === 42 && req.width === 64 && req.height === 64 && req.steps === 4 && req.prompt === 'a lighthouse at dawn, oil painting' &&
    req.negative_prompt === 'blurry' && req.sampler_name === 'Euler a', 'the page sent other settings than typed: ' + sent[0]);
  check(await page.$eval('#info-seed', (e) => e.textContent) === 'Seed 42', 'the seed used is not shown as "Seed 42": ' + await page.$eval('#info-seed', (e) => e.textContent));
  check(await page.$eval('#bar', (e) => e.getAttribute('aria-valuenow')) === '100', 'the progress bar does not end at 100');
  check(await page.$$eval('#gallery li', (l) => l.length) === 1, 'the gallery does not hold the one image');
  const shown = await pageBytes(page, '#result', 'src');
  const download = await pageBytes(page, '#download', 'href');
  check(shown === download, 'the image shown is not the file Download PNG saves');
  check(/^sd-42-64x64\.png$/.test(await page.$eval('#download', (e) => e.download)), 'download name: ' + await page.$eval('#download', (e) => e.download));

  const api = await fetch(srv.url + '/sdapi/v1/txt2img', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: sent[0] });
  check(api.status === 200, 'the API answered the page\'s request with ' + api.status);
  const apiJson = await api.json();
  const a = decodePng(Buffer.from(download, 'base64')), b = decodePng(Buffer.from(apiJson.images[0], 'base64'));
  check(a.w === 64 && a.h === 64, `the page's image is ${a.w}x${a.h}, not 64x64`);
  check(a.w === b.w && a.h === b.h && a.channels === b.channels && a.px.equals(b.px), 'the page\'s image differs from the API\'s for the same request');
  check(new Set(a.px).size > 16, 'the image is (nearly) uniform: not a generated picture');
  check(/Seed: 42\b/.test(a.text.parameters || ''), 'the downloaded PNG lacks A1111 "parameters" metadata with "Seed: 42": ' + JSON.stringify(a.text));

  // The gallery's Reuse puts the image's settings back, its seed fixed.
  await fill(page, '#prompt', 'something else');
  await fill(page, '#seed', -1);
  await fill(page, '#steps', 9);
  await page.click('#gallery li button.small');
  const back = await page.evaluate(() => ['prompt', 'negative', 'seed', 'steps', 'width', 'height', 'sampler'].map((id) => document.getElementById(id).value));
  check(JSON.stringify(back) === JSON.stringify(['a lighthouse at dawn, oil painting', 'blurry', '42', '4', '64', '64', 'Euler a']),
    'Reuse did not restore the settings: ' + back.join(', '));

  fs.mkdirSync(path.dirname(screenshot), { recursive: true });
  await sleep(400); // the progress bar's last transition
  // from the top: a full-page capture of a scrolled page draws the sticky header mid-page
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: screenshot, fullPage: true });

  // ---- 2. a long run: the progress bar moves, Interrupt stops it well before its end
  await fill(page, '#width', 256);
  await fill(page, '#height', 256);
  await fill(page, '#steps', 150);
  await page.evaluate(() => {
    window.seenProgress = [];
    new MutationObserver(() => window.seenProgress.push(Number(document.getElementById('bar').getAttribute('aria-valuenow'))))
      .observe(document.getElementById('bar'), { attributes: true, attributeFilter: ['aria-valuenow'] });
  });
  const t0 = Date.now();
  await page.focus('#prompt');
  await page.keyboard.down('Control'); await page.keyboard.press('Enter'); await page.keyboard.up('Control'); // the shortcut
  await page.waitForFunction(() => document.body.dataset.state === 'running', { timeout: 5000 });
  // Wait until the server reports a few steps, so the time per step is known.
  const atClick = await page.waitForFunction(() => {
    const m = /Step (\d+) of (\d+)/.exec(document.getElementById('status').textContent);
    return m && Number(m[1]) >= 2 ? [Number(m[1]), Number(m[2])] : false;
  }, { timeout: 120000, polling: 50 }).then((h) => h.jsonValue());
  const tClick = Date.now();
  const seen = await page.evaluate(() => window.seenProgress);
  check(seen.some((v) => v > 0 && v < 100), 'the progress bar did not move during the run: ' + seen.join(' '));
  check(await page.$eval('#preview-badge', (e) => !e.hidden) && /^data:image\//.test(await page.$eval('#result', (e) => e.src)),
    'no live preview from current_image during the run');
  await page.click('#interrupt');
  await page.waitForFunction(() => document.body.dataset.state !== 'running', { timeout: 120000 });
  const tEnd = Date.now();
  // What the rest of the run would have taken, from the time per step so far (an upper bound of
  // the per-step time, as it includes the request's start).
  const [step, total] = atClick;
  const remaining = (tClick - t0) / step * (total - step);
  check(total === 150, `the server reported ${total} steps, not 150`);
  check(tEnd - tClick < remaining / 4, `Interrupt did not stop the run early: ${tEnd - tClick} ms after it, where the rest would take ~${Math.round(remaining)} ms`);
  check(await page.evaluate(() => document.body.dataset.state) === 'interrupted', 'the page does not say the run was interrupted');
  check(await page.$eval('#error', (e) => e.hidden), 'an interrupted run shows an error: ' + await page.$eval('#error-text', (e) => e.textContent));
  check(await page.$eval('#generate', (e) => !e.disabled) && await page.$eval('#interrupt', (e) => e.disabled), 'the buttons are not back to idle after the interrupt');

  // ---- 3. image to image: the chosen files go out as they are, with the strength
  const initPath = path.join(os.tmpdir(), `sd-web-init-${process.pid}.png`);
  fs.writeFileSync(initPath, Buffer.from(download, 'base64'));
  try {
    const before = await page.$$eval('#gallery li', (l) => l.length);
    await page.click('#img2img summary');
    await (await page.$('#init-file')).uploadFile(initPath);
    await (await page.$('#mask-file')).uploadFile(initPath);
    await page.waitForSelector('#init-drop img');
    await page.waitForSelector('#mask-drop img');
    await fill(page, '#strength-num', 0.5);
    await fill(page, '#width', 64);
    await fill(page, '#height', 64);
    await fill(page, '#steps', 4);
    await page.click('#generate');
    await page.waitForFunction(() => document.body.dataset.state !== 'running', { timeout: 120000 });
    check(await page.evaluate(() => document.body.dataset.state) === 'done', 'image to image failed: ' + await page.$eval('#error-text', (e) => e.textContent));
    const r = sentImg2img.length === 1 ? JSON.parse(sentImg2img[0]) : {};
    check(Array.isArray(r.init_images) && r.init_images[0] === download && r.mask === download && r.denoising_strength === 0.5,
      'the img2img request lacks the file as init_images and mask, or strength 0.5: ' + JSON.stringify(Object.keys(r)) + ' ' + r.denoising_strength);
    check(await page.$$eval('#gallery li', (l) => l.length) === before + 1, 'the image to image result is not in the gallery');
    await page.click('#init-clear');
    await page.click('#mask-clear');
    check(await page.$eval('#i2i-badge', (e) => e.hidden) && !await page.$('#init-drop img'), 'Remove did not clear the initial image');
  } finally {
    fs.rmSync(initPath, { force: true });
  }

  // ---- 4. a request the server refuses: its message is shown, and the page recovers
  await page.evaluate(() => { const o = document.createElement('option'); o.value = o.textContent = 'No Such Sampler'; document.getElementById('sampler').append(o); });
  await page.select('#sampler', 'No Such Sampler');
  await fill(page, '#width', 64);
  await fill(page, '#height', 64);
  await fill(page, '#steps', 2);
  await page.click('#generate');
  await page.waitForFunction(() => document.body.dataset.state !== 'running', { timeout: 60000 });
  const err = await page.$eval('#error-text', (e) => e.textContent);
  check(await page.evaluate(() => document.body.dataset.state) === 'error' && /^400\b/.test(err) && err.includes('No Such Sampler'),
    'an unknown sampler is not reported as the server\'s 400 naming it: ' + err);
  check(await page.$eval('#error', (e) => !e.hidden), 'the error is not visible');
  check(await page.$eval('#generate', (e) => !e.disabled), 'Generate stays disabled after an error');

  check(pageErrors.length === 0, 'errors in the page\'s console: ' + pageErrors.join(' | '));
}

// ---- 5. a server started with --api-key: the page says so, asks for the key, and works with it
async function runWithKey(browser) {
  const key = 'web-test-key-' + process.pid;
  const srv = await startServer(['--model', model, '--port', '0', '--api-key', key]);
  try {
    const page = await browser.newPage();
    await page.goto(srv.url + '/');
    await page.waitForFunction(() => document.getElementById('conn').dataset.ok === '0' && document.getElementById('key-dialog').open, { timeout: 15000 });
    const err = await page.$eval('#error-text', (e) => e.textContent);
    check(/^401\b/.test(err) && /API key/.test(err), 'a missing key is not reported as 401 asking for the API key: ' + err);
    await page.type('#api-key', key);
    await page.click('#key-save');
    await page.waitForFunction(() => document.getElementById('conn').dataset.ok === '1', { timeout: 15000 });
    check(await page.evaluate(() => localStorage.getItem('sd-server.api-key')) === key, 'the key is not kept in localStorage');
    check(await page.$eval('#error', (e) => e.hidden), 'the 401 message stays after the key was given');
    await fill(page, '#prompt', 'a key');
    await fill(page, '#width', 64);
    await fill(page, '#height', 64);
    await fill(page, '#steps', 2);
    await page.click('#generate');
    await page.waitForFunction(() => document.body.dataset.state !== 'running', { timeout: 60000 });
    check(await page.evaluate(() => document.body.dataset.state) === 'done', 'no image with the API key: ' + await page.$eval('#error-text', (e) => e.textContent));
  } finally {
    const st = await stopServer(srv);
    check(st === 0, `sd-server --api-key did not exit cleanly on SIGTERM (${st})`);
  }
}

const watchdog = setTimeout(() => { check(false, 'the test took over 10 minutes'); finish(); }, 600000);
watchdog.unref();
main().catch((e) => check(false, e.stack || String(e))).finally(finish);
