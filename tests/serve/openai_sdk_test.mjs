// Drives a running `dpa_serve serve` with the official `openai` SDK (Node); sdk_harness.mjs has
// the client and the check runner.
//   node openai_sdk_test.mjs BASE_URL NODE_MODULES_DIR MODEL_NAME
// Exits non-zero on the first failed assertion, printing what differed.
import assert from 'node:assert/strict';

import { check, client, modelName, passed, waitIdle } from './sdk_harness.mjs';

const greedy = { model: modelName, temperature: 0, ignore_eos: true };

await check('models.list', async () => {
  const models = await client.models.list();
  assert.equal(models.data.length, 1);
  assert.equal(models.data[0].id, modelName);
  assert.ok(models.data[0].max_model_len > 0);
});

let refText;
await check('completions (greedy, deterministic)', async () => {
  const a = await client.completions.create({ ...greedy, prompt: 'The quick brown fox', max_tokens: 6 });
  assert.equal(a.object, 'text_completion');
  assert.equal(a.choices.length, 1);
  assert.equal(a.choices[0].finish_reason, 'length');
  assert.equal(a.usage.completion_tokens, 6);
  assert.ok(a.usage.prompt_tokens > 0);
  assert.equal(a.usage.total_tokens, a.usage.prompt_tokens + 6);
  const b = await client.completions.create({ ...greedy, prompt: 'The quick brown fox', max_tokens: 6 });
  assert.equal(b.choices[0].text, a.choices[0].text);
  refText = a.choices[0].text;
});

await check('stop strings (non-streamed and streamed)', async () => {
  const cps = Array.from(refText);
  assert.ok(cps.length >= 4, `reference text too short: ${JSON.stringify(refText)}`);
  const mid = Math.floor(cps.length / 2);
  const stop = cps.slice(mid, mid + 2).join('');
  const want = refText.slice(0, refText.indexOf(stop));
  const r = await client.completions.create({ ...greedy, prompt: 'The quick brown fox', max_tokens: 6, stop: [stop] });
  assert.equal(r.choices[0].text, want);
  assert.equal(r.choices[0].finish_reason, 'stop');
  const s = await client.completions.create({ ...greedy, prompt: 'The quick brown fox', max_tokens: 6, stop: stop,
                                              stream: true });
  let text = '', finish = null;
  for await (const c of s) {
    if (!c.choices.length) continue;
    text += c.choices[0].text;
    finish = c.choices[0].finish_reason ?? finish;
  }
  assert.equal(text, want);
  assert.equal(finish, 'stop');
});

await check('echo: every prompt of a list, streamed and not', async () => {
  const prompts = ['The quick brown fox', 'Once upon a time'];
  const plain = await client.completions.create({ ...greedy, prompt: prompts, max_tokens: 4 });
  const r = await client.completions.create({ ...greedy, prompt: prompts, max_tokens: 4, echo: true });
  assert.equal(r.choices.length, 2);
  for (const c of r.choices) assert.equal(c.text, prompts[c.index] + plain.choices[c.index].text);
  const s = await client.completions.create({ ...greedy, prompt: prompts, max_tokens: 4, echo: true, stream: true });
  const texts = ['', ''];
  for await (const c of s) for (const ch of c.choices) texts[ch.index] += ch.text;
  assert.deepEqual(texts, r.choices.map((c) => c.text));
  const ids = await client.completions.create({ ...greedy, prompt: [100, 200], max_tokens: 2, echo: true,
                                                return_tokens_as_token_ids: false });
  assert.ok(ids.choices[0].text.length > 0);
});

await check("echo with logprobs: the prompt's logprobs first (lm-eval's loglikelihood request)", async () => {
  const prompt = [100, 200, 300, 400];
  const r = await client.completions.create({ ...greedy, prompt, max_tokens: 1, echo: true, logprobs: 1 });
  const lp = r.choices[0].logprobs;
  assert.equal(lp.tokens.length, 5);
  assert.equal(lp.token_logprobs[0], null);
  assert.ok(lp.token_logprobs.slice(1).every((x) => typeof x === 'number' && x <= 0));
  assert.equal(lp.top_logprobs.length, 5);
  const only = await client.completions.create({ ...greedy, prompt, max_tokens: 0, echo: true, logprobs: 1 });
  assert.equal(only.choices[0].logprobs.tokens.length, 4);
  const same = only.choices[0].logprobs.token_logprobs;
  assert.equal(same[0], null);
  for (let i = 1; i < 4; ++i) assert.ok(Math.abs(same[i] - lp.token_logprobs[i]) < 1e-5, `${same[i]} ${lp.token_logprobs[i]}`);
  assert.equal(only.usage.completion_tokens, 0);
  assert.equal(only.choices[0].text, r.choices[0].text.slice(0, only.choices[0].text.length));
});

await check('stream_options.continuous_usage_stats: usage in every chunk', async () => {
  const s = await client.completions.create({ ...greedy, prompt: [100, 200, 300], max_tokens: 5, stream: true,
                                              stream_options: { include_usage: true, continuous_usage_stats: true } });
  const counts = [];
  for await (const c of s) {
    assert.equal(c.usage.prompt_tokens, 3);
    if (c.choices.length) counts.push(c.usage.completion_tokens);
    else assert.equal(c.usage.completion_tokens, 5);  // the final usage chunk
  }
  assert.ok(counts.length >= 1 && counts.at(-1) === 5, JSON.stringify(counts));
  for (let i = 1; i < counts.length; ++i) assert.ok(counts[i] > counts[i - 1], JSON.stringify(counts));
  await assert.rejects(client.completions.create({ ...greedy, prompt: 'x', max_tokens: 1,
                                                   stream_options: { include_usage: true } }),
                       (e) => e.status === 400 && /stream/.test(e.message));
});

await check('completions with a token-id prompt', async () => {
  const r = await client.completions.create({ ...greedy, prompt: [100, 200, 300], max_tokens: 3 });
  assert.equal(r.usage.prompt_tokens, 3);
  assert.equal(r.usage.completion_tokens, 3);
});

await check('logit_bias (the SDK\'s shape: string ids)', async () => {
  const r = await client.completions.create({ ...greedy, prompt: 'The quick brown fox', max_tokens: 4,
                                              logit_bias: { '100': 100 }, logprobs: 0,
                                              return_tokens_as_token_ids: true });
  assert.deepEqual(r.choices[0].logprobs.tokens, Array(4).fill('token_id:100'));
});

await check('chat.completions', async () => {
  const r = await client.chat.completions.create({
    ...greedy, messages: [{ role: 'user', content: 'Say hi' }], max_tokens: 5 });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(typeof r.choices[0].message.content, 'string');
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.completion_tokens, 5);
});

await check('completions stream with include_usage', async () => {
  const stream = await client.completions.create({
    ...greedy, prompt: 'The quick brown fox', max_tokens: 6, stream: true, stream_options: { include_usage: true } });
  let text = '', usage = null, finish = null, chunks = 0;
  for await (const c of stream) {
    chunks++;
    if (c.choices.length === 0) { usage = c.usage; continue; }
    assert.equal(c.usage, null);
    text += c.choices[0].text;
    if (c.choices[0].finish_reason) finish = c.choices[0].finish_reason;
  }
  assert.equal(text, refText, 'streamed text equals the non-streamed greedy text');
  assert.equal(finish, 'length');
  assert.ok(usage, 'a usage chunk came');
  assert.equal(usage.completion_tokens, 6);
  assert.ok(chunks >= 2);
});

await check('chat stream with include_usage', async () => {
  const stream = await client.chat.completions.create({
    ...greedy, messages: [{ role: 'user', content: 'Say hi' }], max_completion_tokens: 5, stream: true,
    stream_options: { include_usage: true } });
  let first = true, content = '', usage = null, finish = null;
  for await (const c of stream) {
    assert.equal(c.object, 'chat.completion.chunk');
    if (c.choices.length === 0) { usage = c.usage; continue; }
    if (first) { assert.equal(c.choices[0].delta.role, 'assistant'); first = false; }
    content += c.choices[0].delta.content ?? '';
    if (c.choices[0].finish_reason) finish = c.choices[0].finish_reason;
  }
  assert.equal(finish, 'length');
  assert.equal(usage.completion_tokens, 5);
  assert.equal(typeof content, 'string');
});

await check('n=2 (completions and chat)', async () => {
  const r = await client.completions.create({ model: modelName, prompt: 'Once upon a time', max_tokens: 4, n: 2,
                                              seed: 7, ignore_eos: true });
  assert.equal(r.choices.length, 2);
  assert.deepEqual(r.choices.map((c) => c.index).sort(), [0, 1]);
  assert.equal(r.usage.completion_tokens, 8);
  const c = await client.chat.completions.create({ model: modelName, messages: [{ role: 'user', content: 'x' }],
                                                   max_tokens: 3, n: 2, ignore_eos: true });
  assert.equal(c.choices.length, 2);
  assert.equal(c.usage.completion_tokens, 6);
  const s = await client.completions.create({ model: modelName, prompt: 'abc', max_tokens: 3, n: 2, ignore_eos: true,
                                              stream: true });
  const seen = new Set();
  for await (const ch of s) for (const x of ch.choices) seen.add(x.index);
  assert.deepEqual([...seen].sort(), [0, 1]);
});

await check('logprobs (completions and chat)', async () => {
  const r = await client.completions.create({ ...greedy, prompt: 'Hello', max_tokens: 4, logprobs: 2 });
  const lp = r.choices[0].logprobs;
  assert.equal(lp.tokens.length, 4);
  assert.equal(lp.token_logprobs.length, 4);
  for (const v of lp.token_logprobs) assert.ok(v <= 0);
  for (const t of lp.top_logprobs) assert.ok(Object.keys(t).length >= 1 && Object.keys(t).length <= 2);
  const c = await client.chat.completions.create({ ...greedy, messages: [{ role: 'user', content: 'Hello' }],
                                                   max_tokens: 3, logprobs: true, top_logprobs: 2 });
  const content = c.choices[0].logprobs.content;
  assert.equal(content.length, 3);
  for (const e of content) {
    assert.ok(e.logprob <= 0);
    assert.equal(e.top_logprobs.length, 2);
  }
});

await check('tools: auto (a forced marker that starts no call comes back as text), stream, a named call', async () => {
  const tools = [{ type: 'function', function: { name: 'get_weather', description: 'Weather of a city',
                                                   parameters: { type: 'object', properties: { city: { type: 'string' } } } } }];
  // 128806 is <｜tool▁calls▁begin｜>: the section starts but no call ever reads, so the parser
  // must give the text back as written.
  const forced = { ...greedy, messages: [{ role: 'user', content: 'Weather in Paris?' }], max_tokens: 3, tools,
                   logit_bias: { '128806': 100 } };
  const r = await client.chat.completions.create({ ...forced, tool_choice: 'auto' });
  assert.equal(r.choices[0].message.content, '<｜tool▁calls▁begin｜>'.repeat(3));
  assert.equal(r.choices[0].message.tool_calls, undefined);
  assert.equal(r.choices[0].finish_reason, 'length');
  const stream = await client.chat.completions.create({ ...forced, stream: true });
  let text = '', finish = null;
  for await (const c of stream) {
    text += c.choices[0]?.delta?.content ?? '';
    assert.equal(c.choices[0]?.delta?.tool_calls, undefined);
    finish = c.choices[0]?.finish_reason ?? finish;
  }
  assert.equal(text, '<｜tool▁calls▁begin｜>'.repeat(3));
  assert.equal(finish, 'length');
  // A named function: the output is its arguments (constrained to its parameters), as a call.
  const named = await client.chat.completions.create({ ...greedy, messages: forced.messages, tools, max_tokens: 300,
                                                       tool_choice: { type: 'function', function: { name: 'get_weather' } } });
  const ch = named.choices[0];
  if (ch.finish_reason === 'stop') {
    assert.equal(ch.message.tool_calls.length, 1);
    assert.equal(ch.message.tool_calls[0].function.name, 'get_weather');
    assert.equal(typeof JSON.parse(ch.message.tool_calls[0].function.arguments), 'object');
  } else {
    assert.equal(ch.finish_reason, 'length');
  }
  await assert.rejects(client.chat.completions.create({ ...forced, tool_choice: 'required', response_format: { type: 'json_object' } }),
                       (e) => e.status === 400 && /cannot be combined/.test(e.message));
});

await check('errors: unknown model 404, context overflow 400', async () => {
  await assert.rejects(client.completions.create({ model: 'no-such-model', prompt: 'x', max_tokens: 1 }),
                       (e) => e.status === 404 && /does not exist/.test(e.message));
  await assert.rejects(client.completions.create({ model: modelName, prompt: 'x', max_tokens: 1000000 }),
                       (e) => e.status === 400);
  await assert.rejects(client.completions.create({ model: modelName, prompt: [999999999], max_tokens: 1 }),
                       (e) => e.status === 400);
});

await check('aborted stream (AbortController) frees its request', async () => {
  const ac = new AbortController();
  const stream = await client.completions.create(
    { ...greedy, prompt: 'A long story', max_tokens: 1500, stream: true }, { signal: ac.signal });
  let got = 0;
  try {
    for await (const c of stream) {
      if (c.choices.length && c.choices[0].text !== undefined) got++;
      if (got === 3) ac.abort();
    }
  } catch (e) {
    assert.ok(e.name === 'APIUserAbortError' || e.name === 'AbortError', `unexpected ${e.name}`);
  }
  assert.ok(got >= 3);
  await waitIdle();
});

console.log(`openai sdk: ${passed} checks passed`);
