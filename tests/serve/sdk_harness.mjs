// What the openai SDK tests (openai_sdk_test.mjs, openai_responses_test.mjs) share: their command
// line, the official `openai` client loaded from the given node_modules and pointed at the
// running server (serve_e2e.sh starts it and waits for its ready line), a runner that stops the
// process at the first failed check, and the wait for the server to be idle after an abort.
//   node TEST.mjs BASE_URL NODE_MODULES_DIR MODEL_NAME [MODE]
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import path from 'node:path';

export const [base, modules, modelName, mode] = process.argv.slice(2);
if (!base || !modules || !modelName) {
  console.log('usage: node TEST.mjs BASE_URL NODE_MODULES_DIR MODEL_NAME [MODE]');
  process.exit(2);
}
const require = createRequire(path.join(modules, 'noop.js'));
const OpenAI = require('openai');
export const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 120000 });

// Checks that passed so far (a live binding: importers see it count up).
export let passed = 0;
// Runs one named check; a failure prints what differed and exits non-zero.
export async function check(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    passed++;
    console.log(`ok: ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    console.log(`FAIL: ${name}: ${e && e.stack ? e.stack : e}`);
    process.exit(1);
  }
}

export async function getLoad() {
  const r = await fetch(`${base}/get_load`);
  assert.equal(r.status, 200);
  return r.json();
}

// Polls /get_load until no replica holds a request or a KV page, failing after `withinMs`: an
// aborted client's request must be gone that soon.
export async function waitIdle(withinMs = 1000) {
  const t0 = Date.now();
  for (;;) {
    const load = await getLoad();
    const busy = load.reduce((s, r) => s + r.num_reqs, 0);
    const used = load.reduce((s, r) => s + (r.kv_total_blocks - r.kv_free_blocks), 0);
    if (busy === 0 && used === 0) return;
    assert.ok(Date.now() - t0 < withinMs, `still busy ${Date.now() - t0} ms after the abort: ${JSON.stringify(load)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
