// Drives `dpa_serve serve`'s /v1/responses with the official `openai` SDK (Node): response and
// stream shapes, store / retrieve / delete, previous_response_id, input items listed and paged,
// a function-tool round trip, text.format json_schema, refused fields. The chat path and
// /tokenize are the oracles.
//   node openai_responses_test.mjs BASE_URL NODE_MODULES_DIR MODEL_NAME [reasoning]
// With "reasoning" the server runs --reasoning-parser deepseek_r1: only the reasoning checks run.
// Exits non-zero on the first failed assertion, printing what differed.
import assert from 'node:assert/strict';

import { base, check, client, mode, modelName, passed, waitIdle } from './sdk_harness.mjs';

async function post(route, body) {
  const r = await fetch(`${base}${route}`, { method: 'POST', headers: { 'Content-Type': 'application/json' },
                                             body: JSON.stringify(body) });
  assert.equal(r.status, 200, `${route}: ${await r.clone().text()}`);
  return r.json();
}
// The prompt the chat path renders for these messages, counted by /tokenize.
async function promptTokens(messages, extra = {}) {
  return (await post('/tokenize', { model: modelName, messages, ...extra })).count;
}
async function generationTokens() {
  const text = await (await fetch(`${base}/metrics`)).text();
  let n = 0;
  for (const m of text.matchAll(/^vllm:generation_tokens_total\{[^}]*\} (\d+)$/gm)) n += Number(m[1]);
  return n;
}
// Collects a stream's events, checking that sequence numbers count up from 0.
async function collect(stream) {
  const events = [];
  for await (const e of stream) {
    assert.equal(e.sequence_number, events.length, `sequence_number of ${e.type}`);
    events.push(e);
  }
  return events;
}

const greedy = { model: modelName, temperature: 0, ignore_eos: true };
// Constrained output ends where its structure closes (EOS), so no ignore_eos there.
const constrained = { model: modelName, temperature: 0 };
const weatherTool = {
  type: 'function', name: 'get_weather', description: 'Weather of a city', strict: true,
  parameters: { type: 'object', properties: { city: { type: 'string', enum: ['Paris', 'Rome'] } },
                required: ['city'], additionalProperties: false },
};

if (mode === 'reasoning') {
  await check('reasoning: an R1 output that never closes </think> is one reasoning item, streamed alike', async () => {
    const input = 'Think about it';
    const chat = await client.chat.completions.create({ ...greedy, messages: [{ role: 'user', content: input }], max_tokens: 6 });
    const want = chat.choices[0].message.reasoning_content;
    assert.ok(want && want.length > 0, JSON.stringify(chat.choices[0].message));
    const r = await client.responses.create({ ...greedy, input, max_output_tokens: 6 });
    assert.equal(r.output[0].type, 'reasoning');
    assert.ok(r.output[0].id.startsWith('rs_'));
    assert.deepEqual(r.output[0].summary, []);
    assert.deepEqual(r.output[0].content, [{ type: 'reasoning_text', text: want }]);
    assert.equal(r.output[1].type, 'message');
    assert.equal(r.output_text, '');
    assert.equal(r.usage.output_tokens_details.reasoning_tokens, 6);
    const events = await collect(await client.responses.create({ ...greedy, input, max_output_tokens: 6, stream: true }));
    const types = events.map((e) => e.type);
    assert.deepEqual(types.slice(0, 4), ['response.created', 'response.in_progress', 'response.output_item.added',
                                         'response.content_part.added']);
    assert.equal(events[2].item.type, 'reasoning');
    const text = events.filter((e) => e.type === 'response.reasoning_text.delta').map((e) => e.delta).join('');
    assert.equal(text, want);
    assert.equal(events.find((e) => e.type === 'response.reasoning_text.done').text, want);
    assert.equal(types.at(-1), 'response.incomplete');
    assert.deepEqual(events.at(-1).response.output[0].content, [{ type: 'reasoning_text', text: want }]);
  });
  console.log(`openai responses (reasoning): ${passed} checks passed`);
  process.exit(0);
}

let first;
await check('responses.create: the chat answer as a response object', async () => {
  const input = 'Say hi';
  const chat = await client.chat.completions.create({ ...greedy, max_tokens: 5,
                                                      messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: input }] });
  const r = await client.responses.create({ ...greedy, input, instructions: 'Be brief.', max_output_tokens: 5,
                                            metadata: { run: 'e2e' }, user: 'tester' });
  assert.ok(r.id.startsWith('resp_'));
  assert.equal(r.object, 'response');
  assert.ok(Math.abs(r.created_at - Date.now() / 1000) < 600);
  assert.equal(r.model, modelName);
  assert.equal(r.status, 'incomplete');  // ignore_eos: cut by max_output_tokens
  assert.deepEqual(r.incomplete_details, { reason: 'max_output_tokens' });
  assert.equal(r.error, null);
  assert.equal(r.output.length, 1);
  const msg = r.output[0];
  assert.equal(msg.type, 'message');
  assert.equal(msg.role, 'assistant');
  assert.ok(msg.id.startsWith('msg_'));
  assert.equal(msg.content[0].type, 'output_text');
  assert.deepEqual(msg.content[0].annotations, []);
  assert.equal(msg.content[0].text, chat.choices[0].message.content);
  assert.equal(r.output_text, chat.choices[0].message.content);  // the SDK's convenience
  assert.equal(r.usage.input_tokens, chat.usage.prompt_tokens);
  assert.equal(r.usage.output_tokens, 5);
  assert.equal(r.usage.total_tokens, r.usage.input_tokens + 5);
  assert.equal(typeof r.usage.input_tokens_details.cached_tokens, 'number');
  assert.equal(r.usage.output_tokens_details.reasoning_tokens, 0);
  // The settings come back.
  assert.equal(r.instructions, 'Be brief.');
  assert.equal(r.max_output_tokens, 5);
  assert.equal(r.temperature, 0);
  assert.equal(r.top_p, 1);
  assert.deepEqual(r.metadata, { run: 'e2e' });
  assert.equal(r.user, 'tester');
  assert.deepEqual(r.text, { format: { type: 'text' } });
  assert.deepEqual(r.tools, []);
  assert.equal(r.tool_choice, 'auto');
  assert.equal(r.parallel_tool_calls, true);
  assert.equal(r.store, true);
  assert.equal(r.previous_response_id, null);
  first = r;
});

await check('stream: the Responses event sequence, text equal to the non-streamed answer', async () => {
  const events = await collect(await client.responses.create({ ...greedy, input: 'Say hi', instructions: 'Be brief.',
                                                               max_output_tokens: 5, stream: true }));
  const types = events.map((e) => e.type);
  const deltas = events.filter((e) => e.type === 'response.output_text.delta');
  assert.ok(deltas.length >= 1);
  assert.deepEqual(types, ['response.created', 'response.in_progress', 'response.output_item.added',
                           'response.content_part.added', ...deltas.map(() => 'response.output_text.delta'),
                           'response.output_text.done', 'response.content_part.done', 'response.output_item.done',
                           'response.incomplete']);
  assert.equal(events[0].response.status, 'in_progress');
  assert.deepEqual(events[0].response.output, []);
  const id = events[0].response.id;
  const itemId = events[2].item.id;
  for (const e of deltas) {
    assert.equal(e.item_id, itemId);
    assert.equal(e.output_index, 0);
    assert.equal(e.content_index, 0);
  }
  const text = deltas.map((e) => e.delta).join('');
  assert.equal(text, first.output_text);
  assert.equal(events.at(-4).text, text);
  assert.equal(events.at(-2).item.content[0].text, text);
  const final = events.at(-1).response;
  assert.equal(final.id, id);
  assert.equal(final.status, 'incomplete');
  assert.equal(final.output[0].id, itemId);
  assert.equal(final.usage.output_tokens, 5);
  // The SDK's stream helper accumulates the same response.
  const helper = client.responses.stream({ ...greedy, input: 'Say hi', instructions: 'Be brief.', max_output_tokens: 5 });
  const done = await helper.finalResponse();  // (this SDK path adds no output_text)
  assert.equal(done.output[0].content[0].text, first.output_text);
});

await check('store: retrieve returns the stored response, delete removes it, store false keeps none', async () => {
  const got = await client.responses.retrieve(first.id);
  assert.equal(got.id, first.id);
  assert.deepEqual(got.output, first.output);
  assert.equal(got.output_text, first.output_text);
  await client.responses.delete(first.id);
  await assert.rejects(client.responses.retrieve(first.id), (e) => e.status === 404 && /not found/.test(e.message));
  await assert.rejects(client.responses.delete(first.id), (e) => e.status === 404);
  const unstored = await client.responses.create({ ...greedy, input: 'x', max_output_tokens: 2, store: false });
  assert.equal(unstored.store, false);
  await assert.rejects(client.responses.retrieve(unstored.id), (e) => e.status === 404);
});

await check('previous_response_id: the stored conversation comes first', async () => {
  const r1 = await client.responses.create({ ...greedy, input: 'Hello there', instructions: 'Be brief.', max_output_tokens: 4 });
  const r2 = await client.responses.create({ ...greedy, input: 'And then?', previous_response_id: r1.id, max_output_tokens: 3 });
  assert.equal(r2.previous_response_id, r1.id);
  // Instructions are not carried over (OpenAI's rule); the earlier turn and its answer are.
  const want = await promptTokens([{ role: 'user', content: 'Hello there' }, { role: 'assistant', content: r1.output_text },
                                   { role: 'user', content: 'And then?' }]);
  assert.equal(r2.usage.input_tokens, want);
  assert.ok(r2.usage.input_tokens > (await promptTokens([{ role: 'user', content: 'And then?' }])) + 4);
  // A third turn continues the second (which holds the first).
  const r3 = await client.responses.create({ ...greedy, input: 'Go on', previous_response_id: r2.id, max_output_tokens: 2 });
  assert.equal(r3.usage.input_tokens, await promptTokens([
    { role: 'user', content: 'Hello there' }, { role: 'assistant', content: r1.output_text },
    { role: 'user', content: 'And then?' }, { role: 'assistant', content: r2.output_text }, { role: 'user', content: 'Go on' }]));
  await assert.rejects(client.responses.create({ ...greedy, input: 'x', previous_response_id: 'resp_unknown' }),
                       (e) => e.status === 404 && e.error?.param === 'previous_response_id');
});

await check('inputItems.list: what the model read, newest first, paged by the SDK cursor', async () => {
  const r1 = await client.responses.create({ ...greedy, input: 'Hello there', instructions: 'Be brief.', max_output_tokens: 2 });
  const call = { type: 'function_call', id: 'fc_mine', call_id: 'call_x', name: 'get_weather', arguments: '{"city":"Rome"}' };
  const r2 = await client.responses.create({ ...greedy, previous_response_id: r1.id, max_output_tokens: 2, tools: [weatherTool],
                                             input: [{ role: 'user', content: [{ type: 'input_text', text: 'And then?' }] }, call,
                                                     { type: 'function_call_output', call_id: 'call_x', output: 'done' }] });
  const page = await client.responses.inputItems.list(r2.id);
  assert.equal(page.body.object, 'list');  // the page object keeps the list's own fields in body
  assert.equal(page.has_more, false);
  // r1's input, r1's output, r2's input: listed newest first; the instructions are no item.
  const items = page.data;
  assert.deepEqual(items.map((i) => i.type), ['function_call_output', 'function_call', 'message', 'message', 'message']);
  assert.deepEqual(items.map((i) => i.role ?? null), [null, null, 'user', 'assistant', 'user']);
  assert.equal(items[0].call_id, 'call_x');
  assert.equal(items[0].output, 'done');
  assert.deepEqual(items[1], { ...call, status: 'completed' });  // the id sent is kept
  assert.deepEqual(items[2].content, [{ type: 'input_text', text: 'And then?' }]);
  assert.deepEqual(items[3], r1.output[0]);  // the earlier answer, with its id
  assert.deepEqual(items[4].content, [{ type: 'input_text', text: 'Hello there' }]);
  for (const i of items) assert.ok(typeof i.id === 'string' && i.id.length > 4, JSON.stringify(i));
  assert.equal(new Set(items.map((i) => i.id)).size, items.length);
  assert.equal(page.body.first_id, items[0].id);
  assert.equal(page.body.last_id, items.at(-1).id);
  // One item a page, oldest first: the SDK follows has_more with after=<last id>.
  const asc = [];
  for await (const item of client.responses.inputItems.list(r2.id, { order: 'asc', limit: 1 })) asc.push(item.id);
  assert.deepEqual(asc, items.map((i) => i.id).reverse());
  const two = await client.responses.inputItems.list(r2.id, { limit: 2, include: ['message.input_image.image_url'] });
  assert.deepEqual(two.data.map((i) => i.id), items.slice(0, 2).map((i) => i.id));
  assert.equal(two.has_more, true);
  await assert.rejects(client.responses.inputItems.list(r2.id, { limit: 101 }),
                       (e) => e.status === 400 && e.error?.param === 'limit');
  await assert.rejects(client.responses.inputItems.list(r2.id, { order: 'up' }),
                       (e) => e.status === 400 && e.error?.param === 'order');
  await assert.rejects(client.responses.inputItems.list(r2.id, { after: 'msg_none' }),
                       (e) => e.status === 400 && e.error?.param === 'after');
  await client.responses.delete(r2.id);
  await assert.rejects(client.responses.inputItems.list(r2.id), (e) => e.status === 404 && /not found/.test(e.message));
});

await check('function tool: a named tool_choice gives a function_call item; its output goes back in', async () => {
  const input = [{ role: 'user', content: 'Weather in Paris?' }];
  const r = await client.responses.create({ ...constrained, input, tools: [weatherTool], max_output_tokens: 300,
                                            tool_choice: { type: 'function', name: 'get_weather' } });
  assert.equal(r.status, 'completed', JSON.stringify(r.output));
  const calls = r.output.filter((o) => o.type === 'function_call');
  assert.equal(calls.length, 1);
  assert.equal(r.output.length, 1, 'only the call: no message item');
  const call = calls[0];
  assert.equal(call.name, 'get_weather');
  assert.equal(call.status, 'completed');
  assert.ok(call.id.startsWith('fc_') && call.call_id.startsWith('call_'));
  assert.ok(['Paris', 'Rome'].includes(JSON.parse(call.arguments).city), call.arguments);
  assert.deepEqual(r.tools, [weatherTool]);
  assert.deepEqual(r.tool_choice, { type: 'function', name: 'get_weather' });
  // Round trip: the call and its output as input items, as the SDK's examples do.
  const back = await client.responses.create({ ...greedy, tools: [weatherTool], max_output_tokens: 3, input: [
    ...input, call, { type: 'function_call_output', call_id: call.call_id, output: '{"sky": "sunny"}' }] });
  assert.equal(back.output[0].type, 'message');
  const want = await promptTokens([...input,
    { role: 'assistant', content: '', tool_calls: [{ id: call.call_id, type: 'function',
                                                     function: { name: call.name, arguments: call.arguments } }] },
    { role: 'tool', tool_call_id: call.call_id, content: '{"sky": "sunny"}' }],
    { tools: [{ type: 'function', function: { name: weatherTool.name, description: weatherTool.description,
                                              parameters: weatherTool.parameters } }] });
  assert.equal(back.usage.input_tokens, want);
  // Streamed: the call's events.
  const events = await collect(await client.responses.create({ ...constrained, input, tools: [weatherTool], max_output_tokens: 300,
                                                               tool_choice: { type: 'function', name: 'get_weather' },
                                                               stream: true }));
  const types = events.map((e) => e.type);
  assert.deepEqual(types, ['response.created', 'response.in_progress', 'response.output_item.added',
                           'response.function_call_arguments.delta', 'response.function_call_arguments.done',
                           'response.output_item.done', 'response.completed']);
  assert.equal(events[2].item.type, 'function_call');
  assert.equal(events[3].delta, call.arguments);
  assert.equal(events[4].arguments, call.arguments);
  assert.deepEqual(events[5].item, { ...call, id: events[5].item.id, call_id: events[5].item.call_id });
  assert.deepEqual(events.at(-1).response.output, [events[5].item]);
});

await check('text.format json_schema: the output parses and follows the schema', async () => {
  const schema = { type: 'object', properties: { answer: { type: 'string', enum: ['yes', 'no'] } },
                   required: ['answer'], additionalProperties: false };
  const r = await client.responses.create({ ...constrained, input: 'Is the sky blue?', max_output_tokens: 300,
                                            text: { format: { type: 'json_schema', name: 'verdict', schema, strict: true } } });
  assert.equal(r.status, 'completed', r.output_text);
  const v = JSON.parse(r.output_text);
  assert.deepEqual(Object.keys(v), ['answer']);
  assert.ok(['yes', 'no'].includes(v.answer));
  assert.equal(r.text.format.type, 'json_schema');
  assert.equal(r.text.format.name, 'verdict');
});

await check('refused: hosted tools, background, include, truncation auto, images, bad types; the server goes on', async () => {
  const bad = async (body, param, status = 400) =>
    assert.rejects(client.responses.create({ model: modelName, input: 'x', max_output_tokens: 2, ...body }),
                   (e) => e.status === status && e.error?.param === param && e.error?.type !== undefined,
                   `${JSON.stringify(body)} -> ${status} ${param}`);
  await bad({ tools: [{ type: 'web_search' }] }, 'tools');
  await bad({ tools: [{ type: 'file_search', vector_store_ids: ['vs_1'] }] }, 'tools');
  await bad({ background: true }, 'background');
  await bad({ include: ['reasoning.encrypted_content'] }, 'include');
  await bad({ truncation: 'auto' }, 'truncation');
  await bad({ input: 5 }, 'input');
  await bad({ input: [{ role: 'user', content: [{ type: 'input_image', image_url: 'http://x/y.png' }] }] }, 'input');
  await bad({ input: [{ type: 'item_reference', id: 'msg_1' }] }, 'input');
  await bad({ max_output_tokens: 'many' }, 'max_output_tokens');
  await bad({ temperature: 'hot' }, 'temperature');
  await bad({ text: { format: { type: 'json_schema', schema: { type: 'object' } } } }, 'text.format');
  await bad({ tool_choice: { type: 'function', name: 'nope' }, tools: [weatherTool] }, 'tool_choice');
  await bad({ model: 'no-such-model' }, 'model', 404);
  const ok = await client.responses.create({ ...greedy, input: 'still there?', max_output_tokens: 2 });
  assert.equal(ok.usage.output_tokens, 2);
});

await check('metrics count responses; an aborted stream frees its request', async () => {
  const before = await generationTokens();
  await client.responses.create({ ...greedy, input: 'count me', max_output_tokens: 7, store: false });
  assert.equal((await generationTokens()) - before, 7);
  const ac = new AbortController();
  const stream = await client.responses.create({ ...greedy, input: 'A long story', max_output_tokens: 1500, stream: true },
                                               { signal: ac.signal });
  let got = 0;
  try {
    for await (const e of stream) if (e.type === 'response.output_text.delta' && ++got === 3) ac.abort();
  } catch (e) {
    assert.ok(e.name === 'APIUserAbortError' || e.name === 'AbortError', `unexpected ${e.name}`);
  }
  assert.ok(got >= 3);
  await waitIdle();
});

console.log(`openai responses: ${passed} checks passed`);
