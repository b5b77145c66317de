#!/usr/bin/env python3
"""Output checks against a running dpa_serve, shared by the CPU end-to-end tests (bad_input_e2e.sh;
serve_e2e.sh for grammars) and the GPU checks (perf/gpu_checks.sh scoring):

  prompt-logprobs URL KEY VOCAB TOL: lm-eval's loglikelihood request (echo + logprobs, max_tokens
    0 or 1) and vLLM's prompt_logprobs. The oracle is greedy decoding: a prompt extended by its own
    greedy tokens scores each of them with the logprob the decode steps gave it (within TOL), in
    the prompt's second scored step (256 rows a step) too; the top-1 entry is the token itself.
    Scoring skips the prefix cache and gives the same numbers again; vLLM's form carries ranks;
    SGLang's /generate return_logprob gives the same numbers; a stream's chunks add up.
  json-object URL KEY: response_format json_object. With '{' and '}' pushed by logit_bias the
    answer is exactly "{}" and then the end of the sequence (finish "stop"), for chat too (where
    a --reasoning-parser's split does not apply); sampled freely it starts with '{' after at most
    32 bytes of whitespace, and parses whenever it stopped by itself; a stream gives the same text.
  choice URL KEY: vLLM's guided_choice. Sampled answers are one of the strings, stopped by
    themselves (one a prefix of another included), completions and chat; cut by max_tokens, a
    prefix of one.
  json-schema URL KEY: response_format json_schema, vLLM's guided_json and structured_outputs,
    SGLang's json_schema (in /generate too). The oracle is the jsonschema package: every sampled
    answer that stopped by itself validates (one with integer bounds, enums, anyOf, a nested array,
    closed objects, a string pattern with a quote in it, a pattern beside minLength/maxLength, and
    a number in [-0.5, 1.25)); a top-level integer in [10, 12] always ends as one of the three. Chat's
    tool_choice "required" and a named function: finished calls name the tools and their
    arguments validate against the tool's parameters ($ref included); a stream adds up.
  regex URL KEY: vLLM's guided_regex and structured_outputs regex, SGLang's regex (chat and
    /generate). The oracle is Python's re.fullmatch: every answer that stopped by itself matches
    (classes, counted repeats, alternation, non-ASCII characters, inline flags); the patterns of texts of at most
    27 bytes always stop within 40 tokens; cut by max_tokens, the text is a prefix of one; a
    stream gives the same text.
  grammar URL KEY: vLLM's guided_grammar, structured_outputs grammar and response_format grammar,
    SGLang's ebnf (chat, completions and /generate's sampling_params). The oracle is
    grammar_check.py (its own reader of the GBNF and a backtracking matcher): every answer that
    stopped by itself is a string of its grammar (matched nested brackets, arithmetic with
    parentheses, a fixed sentence, non-ASCII classes), those of finite grammars always stop; cut
    by max_tokens, the start of one; a stream gives the same text. Bad grammars sent among them
    are 400s naming the field, what is wrong and where, one past the recognizer's work cap is
    ended by the engine with an error, and the others still succeed.
  restrict URL KEY: vLLM's allowed_token_ids and bad_words. Sampled tokens are all allowed ones;
    an output never holds a bad word's tokens (as written or after a space); where those are one
    token each, the output is the greedy one under logit_bias -100 on them (the oracle); a
    banned greedy token changes the output; with every allowed token banned (EOS alone allowed,
    before min_tokens) the sequence ends instead of failing.

Exits non-zero (an assertion) on the first failure.
"""
import json
import sys
import urllib.request

url, key = sys.argv[2], sys.argv[3]


def post(path, body):
    req = urllib.request.Request(url + path, json.dumps(body).encode(), {"Content-Type": "application/json",
                                                                         "Authorization": "Bearer " + key})
    with urllib.request.urlopen(req, timeout=300) as r:
        return r.read().decode()


def completion(**body):
    return json.loads(post("/v1/completions", {"temperature": 0, "return_tokens_as_token_ids": True, **body}))


def ids(toks):
    return [int(t.split(":")[1]) for t in toks]


def prompt_logprobs(vocab, tol):
    P = [5 + (i * 7919) % (vocab - 10) for i in range(260)]
    a = completion(prompt=P, max_tokens=20, logprobs=1, ignore_eos=True)["choices"][0]["logprobs"]
    gen, gen_lp = ids(a["tokens"]), a["token_logprobs"]
    assert len(gen) == 20, a
    Q = P + gen[:19]
    b = completion(prompt=Q, max_tokens=0, echo=True, logprobs=1)
    c = b["choices"][0]
    lp = c["logprobs"]
    assert c["finish_reason"] == "length" and b["usage"]["completion_tokens"] == 0 and b["usage"]["prompt_tokens"] == 279, b["usage"]
    assert ids(lp["tokens"]) == Q and lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None, lp["tokens"][:3]
    assert len(lp["token_logprobs"]) == 279 and len(lp["text_offset"]) == 279
    assert all(x <= y for x, y in zip(lp["text_offset"], lp["text_offset"][1:])) and lp["text_offset"][-1] <= len(c["text"])
    worst = 0.0
    for j in range(19):
        got = lp["token_logprobs"][260 + j]
        worst = max(worst, abs(got - gen_lp[j]))
        assert abs(got - gen_lp[j]) < tol, (j, got, gen_lp[j])
        # Greedy: the top-1 is the token itself, or (prefill and decode differ by up to TOL: the
        # GPU's bf16 paths) one whose logprob is within TOL of it.
        top = lp["top_logprobs"][260 + j]
        (top_tok, top_lp), = top.items()
        exact = int(top_tok.split(":")[1]) == gen[j]
        assert abs(top_lp - got) < (1e-6 if exact else tol) and top_lp >= got - 1e-6, (j, top, got)
    assert all(x is not None and x <= 0 for x in lp["token_logprobs"][1:])
    again = completion(prompt=Q, max_tokens=0, echo=True, logprobs=1)["choices"][0]["logprobs"]["token_logprobs"]
    assert all(abs(x - y) < tol for x, y in zip(again[1:], lp["token_logprobs"][1:])), "a second scoring differs"
    # max_tokens 1 (what lm-eval sends): the prompt's entries, then the drawn token's, which is gen[19].
    d = completion(prompt=Q, max_tokens=1, echo=True, logprobs=2)["choices"][0]
    assert len(d["logprobs"]["tokens"]) == 280 and ids(d["logprobs"]["tokens"])[-1] == gen[19], d["logprobs"]["tokens"][-3:]
    assert abs(d["logprobs"]["token_logprobs"][-1] - gen_lp[19]) < tol
    assert all(len(t) == 2 for t in d["logprobs"]["top_logprobs"][1:])
    # vLLM's prompt_logprobs: the token with its rank, and the top 3 with ranks 1..3.
    e = completion(prompt=Q[:40], max_tokens=1, prompt_logprobs=3)["choices"][0]["prompt_logprobs"]
    assert len(e) == 40 and e[0] is None, e[:2]
    for i in range(1, 40):
        ent = e[i]
        mine = ent[str(Q[i])]
        assert abs(mine["logprob"] - lp["token_logprobs"][i]) < tol and mine["rank"] >= 1, (i, ent)
        ranks = sorted(v["rank"] for v in ent.values())  # the top 3, and the token where it is not among them
        assert ranks[:3] == [1, 2, 3] and len(ent) == (3 if mine["rank"] <= 3 else 4), (i, ent)
        by_rank = sorted(ent.values(), key=lambda v: v["rank"])
        assert all(x["logprob"] >= y["logprob"] for x, y in zip(by_rank, by_rank[1:])), ent
    # SGLang's /generate with return_logprob: [logprob, id, text] entries from logprob_start_len on.
    g = json.loads(post("/generate", {"input_ids": Q[:40], "sampling_params": {"max_new_tokens": 3, "temperature": 0},
                                      "return_logprob": True, "logprob_start_len": 0, "top_logprobs_num": 2,
                                      "return_text_in_logprobs": True}))["meta_info"]
    inp, out = g["input_token_logprobs"], g["output_token_logprobs"]
    assert len(inp) == 40 and inp[0][0] is None and [e[1] for e in inp] == Q[:40], inp[:2]
    assert all(abs(inp[i][0] - lp["token_logprobs"][i]) < tol and isinstance(inp[i][2], str) for i in range(1, 40))
    assert len(out) == 3 and len(g["output_top_logprobs"]) == 3 and all(len(t) == 2 for t in g["input_top_logprobs"][1:])
    assert abs(out[0][0] - g["output_top_logprobs"][0][0][0]) < 1e-6  # greedy: the first draw is the top one
    g = json.loads(post("/generate", {"input_ids": Q[:40], "sampling_params": {"max_new_tokens": 1},
                                      "return_logprob": True, "logprob_start_len": 10}))["meta_info"]
    assert len(g["input_token_logprobs"]) == 30 and g["input_token_logprobs"][0][2] is None and "input_top_logprobs" not in g
    assert abs(g["input_token_logprobs"][0][0] - lp["token_logprobs"][10]) < tol
    chat = json.loads(post("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi there"}], "max_tokens": 1,
                                                    "prompt_logprobs": 0}))
    assert len(chat["prompt_logprobs"]) == chat["usage"]["prompt_tokens"] and chat["prompt_logprobs"][0] is None, chat
    # Streamed echo + logprobs: the first chunk carries the prompt's entries; the chunks add up.
    full = completion(prompt=Q[:10], max_tokens=3, echo=True, logprobs=1)["choices"][0]["logprobs"]["token_logprobs"]
    streamed = []
    for line in post("/v1/completions", dict(prompt=Q[:10], max_tokens=3, echo=True, logprobs=1, temperature=0,
                                             stream=True)).splitlines():
        if line.startswith("data: {"):
            ch = json.loads(line[6:])["choices"]
            if ch and ch[0]["logprobs"]:
                streamed += ch[0]["logprobs"]["token_logprobs"]
    assert len(streamed) == 13 and streamed[0] is None and all(abs(x - y) < tol for x, y in zip(streamed[1:], full[1:])), (streamed, full)
    print(f"prompt logprobs: the scored greedy tokens are within {worst:.2e} of their decode logprobs")


def json_object():
    tok = lambda s: json.loads(post("/tokenize", {"prompt": s, "add_special_tokens": False}))["tokens"]
    (lb,), (rb,) = tok("{"), tok("}")
    JO = {"type": "json_object"}
    bias = {str(lb): 100, str(rb): 100}
    c = json.loads(post("/v1/completions", {"prompt": "Hi", "max_tokens": 8, "response_format": JO, "logit_bias": bias}))["choices"][0]
    assert c["text"] == "{}" and c["finish_reason"] == "stop", c
    m = json.loads(post("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8,
                                                 "response_format": JO, "logit_bias": bias}))["choices"][0]
    assert m["message"]["content"] == "{}" and "reasoning_content" not in m["message"] and m["finish_reason"] == "stop", m
    stopped = 0
    for seed in range(1, 9):
        body = {"prompt": "Give me JSON", "max_tokens": 48, "temperature": 1, "seed": seed, "response_format": JO}
        c = json.loads(post("/v1/completions", body))["choices"][0]
        text = c["text"]
        lead = len(text) - len(text.lstrip(" \t\r\n"))
        assert lead <= 32 and text[lead:lead + 1] == "{", repr(text)
        if c["finish_reason"] == "stop":
            assert isinstance(json.loads(text), dict), repr(text)
            stopped += 1
        else:
            assert c["finish_reason"] == "length", c
        if seed == 1:
            streamed = "".join(json.loads(l[6:])["choices"][0]["text"] for l in post("/v1/completions", dict(body, stream=True)).splitlines()
                               if l.startswith("data: {") and json.loads(l[6:])["choices"])
            assert streamed == text, (streamed, text)
    print("sampled outputs that closed their object:", stopped)


def choice():
    choices = ["negative", "neutral", "positive", "yes", "yes sir", "caf\u00e9 \u20ac"]
    for seed in range(1, 9):
        body = {"prompt": "Classify: great movie", "max_tokens": 16, "temperature": 1, "seed": seed,
                "guided_choice": choices}
        c = json.loads(post("/v1/completions", body))["choices"][0]
        assert c["text"] in choices and c["finish_reason"] == "stop", (c, choices)
        m = json.loads(post("/v1/chat/completions", {"messages": [{"role": "user", "content": "Yes or no?"}],
                                                     "max_tokens": 16, "seed": seed, "guided_choice": ["no", "yes"]}))
        m = m["choices"][0]
        assert m["message"]["content"] in ("no", "yes") and m["finish_reason"] == "stop", m
    # max_tokens too small for the choice: cut short, a prefix of one.
    c = json.loads(post("/v1/completions", {"prompt": "x", "max_tokens": 1, "guided_choice": ["a" * 40]}))["choices"][0]
    assert c["finish_reason"] == "length" and ("a" * 40).startswith(c["text"]) and c["text"], c


def json_schema():
    import concurrent.futures
    import jsonschema
    item = {"type": "object", "properties": {"id": {"type": "integer", "minimum": -5, "maximum": 120},
                                             "tag": {"enum": ["red", "green", None, 7]}, "ok": {"type": "boolean"}},
            "required": ["id", "tag"], "additionalProperties": False}
    schema = {"type": "object", "additionalProperties": False, "required": ["name", "items", "code", "slug", "ratio"],
              "properties": {"name": {"type": "string", "maxLength": 6},
                             "ratio": {"type": "number", "minimum": -0.5, "exclusiveMaximum": 1.25},
                             "slug": {"type": "string", "pattern": "[a-z]", "minLength": 2, "maxLength": 4},
                             "code": {"type": "string", "pattern": "^[A-Z]{2}-\\d{3}( \"[a-z]{1,8}\")?$"},
                             "items": {"type": "array", "items": {"$ref": "#/$defs/item"}, "maxItems": 2},
                             "score": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 9}, {"type": "null"}]},
                             # formats as pydantic writes them (datetime, date, UUID, IPv4Address): checked below
                             # by Python's own parsers, which jsonschema does not run by default
                             "when": {"type": "string", "format": "date-time"},
                             "day": {"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]},
                             "uid": {"type": "string", "format": "uuid"}, "ip": {"type": "string", "format": "ipv4"}},
              "$defs": {"item": item}}
    jsonschema.Draft202012Validator.check_schema(schema)
    chat = lambda **b: ("/v1/chat/completions", dict(messages=[{"role": "user", "content": "JSON please"}], **b))
    comp = lambda **b: ("/v1/completions", dict(prompt="JSON please", **b))
    forms = [comp(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}),
             chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}),
             comp(guided_json=schema), comp(guided_json=json.dumps(schema)), chat(structured_outputs={"json": schema}),
             ("/generate", {"text": "JSON please", "sampling_params": {"json_schema": json.dumps(schema)}})]
    def formats_parse(v):
        import datetime, ipaddress, uuid
        if "when" in v:
            datetime.datetime.fromisoformat(v["when"].replace("Z", "+00:00"))
        if v.get("day") is not None:
            datetime.date.fromisoformat(v["day"])
        if "uid" in v:
            uuid.UUID(v["uid"])
        if "ip" in v:
            ipaddress.IPv4Address(v["ip"])
        return sum(k in v for k in ("when", "day", "uid", "ip"))

    jobs = []
    for path, body in forms:
        for seed in range(1, 6):
            if path == "/generate":
                b = dict(body, sampling_params=dict(body["sampling_params"], temperature=1, sampling_seed=seed,
                                                    max_new_tokens=400))
            else:
                b = dict(body, temperature=1, seed=seed, max_tokens=400)
            jobs.append((path, b))
    bounded = {"type": "integer", "minimum": 10, "maximum": 12}
    for seed in range(1, 6):
        jobs.append(comp(temperature=1, seed=seed, max_tokens=40, guided_json=bounded))
    # tool_choice "required" and a named function: calls of the tools, with valid arguments.
    weather = {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]},
                                                "days": {"type": "integer", "minimum": 1, "maximum": 7}},
               "required": ["city", "days"], "additionalProperties": False}
    ping = {"$defs": {"h": {"type": "string", "maxLength": 3}}, "type": "object",
            "properties": {"host": {"$ref": "#/$defs/h"}}, "required": ["host"], "additionalProperties": False}
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": weather}},
             {"type": "function", "function": {"name": "ping", "parameters": ping}}]
    params = {"get_weather": weather, "ping": ping}
    named = {"type": "function", "function": {"name": "ping"}}
    tool_jobs = [chat(tools=tools, tool_choice=tc, temperature=1, seed=seed, max_tokens=400)
                 for tc in (named, "required") for seed in range(1, 5)]

    def run(job):
        path, body = job
        r = json.loads(post(path, body))
        if path == "/generate":
            return r["text"], r["meta_info"]["finish_reason"]["type"]
        c = r["choices"][0]
        return (c["message"]["content"] if "message" in c else c["text"]), c["finish_reason"]

    with concurrent.futures.ThreadPoolExecutor(len(jobs) + len(tool_jobs)) as ex:
        calls = ex.map(lambda j: json.loads(post(*j))["choices"][0], tool_jobs)
        answers = list(ex.map(run, jobs))
        calls = list(calls)
    called = 0
    for (_, body), c in zip(tool_jobs, calls):
        forced = body["tool_choice"] is named
        if c["finish_reason"] == "length":
            continue
        assert c["finish_reason"] == ("stop" if forced else "tool_calls"), c
        tc = c["message"]["tool_calls"]
        assert tc and c["message"]["content"] is None and (not forced or len(tc) == 1), c
        for t in tc:
            assert not forced or t["function"]["name"] == "ping", t
            jsonschema.validate(json.loads(t["function"]["arguments"]), params[t["function"]["name"]])
        called += 1
    assert called > 0, "no forced tool call finished within max_tokens"
    # A named call streamed: its arguments add up to the answer's.
    body = dict(tool_jobs[0][1], stream=True)
    args = "".join(tc["function"].get("arguments", "") for l in post("/v1/chat/completions", body).splitlines()
                   if l.startswith("data: {") for ch in json.loads(l[6:])["choices"]
                   for tc in ch["delta"].get("tool_calls", []))
    if calls[0]["finish_reason"] != "length":
        assert args == calls[0]["message"]["tool_calls"][0]["function"]["arguments"], (args, calls[0])
    print(f"tool_choice: {called} of {len(tool_jobs)} forced calls finished, all valid")
    stopped = formatted = 0
    for (path, body), (text, finish) in zip(jobs, answers):
        if body.get("guided_json") is bounded:
            assert finish == "stop" and text.strip() in ("10", "11", "12"), (text, finish)
        elif finish == "stop":
            jsonschema.validate(json.loads(text), schema)
            formatted += formats_parse(json.loads(text))
            stopped += 1
        else:
            assert finish == "length", (path, text, finish)
    assert stopped > 0, "no sampled answer closed its object within max_tokens"
    print(f"json_schema: {stopped} of {len(jobs) - 5} sampled answers stopped by themselves, all valid "
          f"({formatted} format fields, each parsed by Python)")


def sampled(form, seed):
    """A (path, body) request form sampled with temperature 1 and `seed`, 40 tokens at most, in the
    route's names (SGLang's /generate: sampling_params)."""
    path, body = form
    if path == "/generate":
        return path, dict(body, sampling_params=dict(body["sampling_params"], temperature=1, sampling_seed=seed,
                                                     max_new_tokens=40))
    return path, dict(body, temperature=1, seed=seed, max_tokens=40)


def regex():
    import concurrent.futures
    import re
    pats = [r"\d{3}-\d{4}", r"(yes|no|maybe), [a-z]{1,8}\.", r"caf[\u00e9e] \u20ac\d{1,2}",
            r"[a-z]{1,10}@[a-z]{2,8}\.(com|org)", r"(?i)(yes|no)(?-i: ok)?", r"(?P<k>[A-Z][a-z]*)( [A-Z][a-z]*){0,3}!?"]
    chat = lambda **b: ("/v1/chat/completions", dict(messages=[{"role": "user", "content": "Answer"}], **b))
    comp = lambda **b: ("/v1/completions", dict(prompt="Answer", **b))
    jobs = []
    for i, pat in enumerate(pats):
        for seed in range(1, 5):
            forms = [comp(guided_regex=pat), chat(guided_regex=pat), comp(structured_outputs={"regex": pat}),
                     chat(regex=pat), ("/generate", {"text": "Answer", "sampling_params": {"regex": pat}})]
            path, body = sampled(forms[(i + seed) % len(forms)], seed)
            jobs.append((pat, path, body))

    def run(job):
        _, path, body = job
        r = json.loads(post(path, body))
        if path == "/generate":
            return r["text"], r["meta_info"]["finish_reason"]["type"]
        c = r["choices"][0]
        return (c["message"]["content"] if "message" in c else c["text"]), c["finish_reason"]

    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as ex:
        answers = list(ex.map(run, jobs))
    stopped = 0
    for (pat, path, body), (text, finish) in zip(jobs, answers):
        if finish == "stop":
            assert re.fullmatch(pat, text), (pat, path, text)
            stopped += 1
        else:
            assert finish == "length" and pat == pats[-1], (pat, path, text, finish)  # the others end within 40 tokens
    # Cut by max_tokens: a prefix of the one text.
    c = json.loads(post("/v1/completions", {"prompt": "x", "max_tokens": 2, "guided_regex": "a{40}"}))["choices"][0]
    assert c["finish_reason"] == "length" and ("a" * 40).startswith(c["text"]) and c["text"], c
    # Streamed: the chunks add up to the same text as the whole answer.
    body = dict(temperature=1, seed=3, max_tokens=40, guided_regex=pats[3], prompt="Answer")
    whole = json.loads(post("/v1/completions", body))["choices"][0]["text"]
    streamed = "".join(json.loads(l[6:])["choices"][0]["text"] for l in post("/v1/completions", dict(body, stream=True)).splitlines()
                       if l.startswith("data: {") and json.loads(l[6:])["choices"])
    assert streamed == whole, (streamed, whole)
    print(f"regex: {stopped} of {len(jobs)} sampled answers stopped by themselves, all match")


def grammar():
    import concurrent.futures
    import os
    import urllib.error
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from grammar_check import Grammar
    grammars = [  # (text, finite: every answer ends within max_tokens)
        ('root ::= pair\npair ::= "(" pair? ")" | "[" pair? "]"  # matched, nested\n', False),
        ('root ::= expr "="\nexpr ::= term (("+" | "*") term){0,3}\nterm ::= [0-9]{1,3} | "(" expr ")"\n', False),
        ('root ::= "The answer is " ("yes" | "no" | [0-9]{1,2}) "."', True),
        ('root ::=\n    [\u03b1-\u03c9]{1,3} " "\n  | "\u00e9" | "\u65e5\u672c"  # non-ASCII\n', True),
    ]
    chat = lambda **b: ("/v1/chat/completions", dict(messages=[{"role": "user", "content": "Answer"}], **b))
    comp = lambda **b: ("/v1/completions", dict(prompt="Answer", **b))
    jobs = []
    for i, (g, finite) in enumerate(grammars):
        for seed in range(1, 6):
            forms = [comp(guided_grammar=g), chat(guided_grammar=g), comp(structured_outputs={"grammar": g}), chat(ebnf=g),
                     ("/generate", {"text": "Answer", "sampling_params": {"ebnf": g}}),
                     chat(response_format={"type": "grammar", "grammar": g})]
            path, body = sampled(forms[(i + seed) % len(forms)], seed)
            jobs.append((g, finite, path, body))
    # Refused among them: (field, body, what the message says).
    bad = [("guided_grammar", comp(guided_grammar='root ::= item\nitem ::= "a" other'), "line 2, column 14: rule 'other' is not defined"),
           ("ebnf", chat(ebnf='root ::= ("a" | "b"'), "expected ')'"),
           ("structured_outputs", comp(structured_outputs={"grammar": "root ::= expr\nexpr ::= expr \"+\" \"1\" | \"1\""}),
            "left-recursive"),
           ("guided_grammar", comp(guided_grammar="value ::= \"a\""), "no 'root' rule"),
           ("min_tokens", comp(guided_grammar='root ::= "a"', min_tokens=1), "min_tokens"),
           ("guided_grammar", comp(guided_grammar='root ::= "a"', guided_regex="a"), "cannot be combined"),
           # Accepted, but its first mask walks past the work cap (400 alternatives counting free
           # characters, hundreds of parses in every state): the engine ends it with an error.
           ("prompt", comp(guided_grammar="root ::= " + " | ".join(f'[^!]{{0,60}} "!{k}"' for k in range(400))),
            "recognizer's limits")]

    def run(job):  # ("bad", field, (path, body), what the message says) or ("good", grammar, finite, path, body)
        if job[0] == "bad":
            _, field, (path, body), want = job
            try:
                post(path, dict(body, max_tokens=5))
            except urllib.error.HTTPError as e:
                err = json.loads(e.read().decode())["error"]
                assert e.code == 400 and err["param"] == field and want in err["message"], (field, e.code, err)
                return None
            raise AssertionError(("accepted", field, body))
        _, _, _, path, body = job
        r = json.loads(post(path, body))
        if path == "/generate":
            return r["text"], r["meta_info"]["finish_reason"]["type"]
        c = r["choices"][0]
        return (c["message"]["content"] if "message" in c else c["text"]), c["finish_reason"]

    mixed = [("good",) + j for j in jobs]
    for k, b in enumerate(bad):  # sent among the good ones, all at once
        mixed.insert(1 + 3 * k, ("bad",) + b)
    with concurrent.futures.ThreadPoolExecutor(len(mixed)) as ex:
        answers = list(ex.map(run, mixed))
    stopped = 0
    checkers = {g: Grammar(g) for g, _ in grammars}
    for job, ans in zip(mixed, answers):
        if job[0] == "bad":
            continue
        _, g, finite, path, body = job
        text, finish = ans
        if finish == "stop":
            assert checkers[g].member(text), (g, path, text)
            stopped += 1
        else:
            assert finish == "length" and not finite and checkers[g].viable(text), (g, path, text, finish)
    assert stopped >= len(jobs) // 2, (stopped, len(jobs))
    # Streamed: the chunks add up to the same text as the whole answer.
    body = dict(temperature=1, seed=3, max_tokens=40, guided_grammar=grammars[1][0], prompt="Answer")
    whole = json.loads(post("/v1/completions", body))["choices"][0]["text"]
    streamed = "".join(json.loads(l[6:])["choices"][0]["text"] for l in post("/v1/completions", dict(body, stream=True)).splitlines()
                       if l.startswith("data: {") and json.loads(l[6:])["choices"])
    assert streamed == whole, (streamed, whole)
    print(f"grammar: {stopped} of {len(jobs)} sampled answers stopped by themselves, all strings of their grammars; "
          f"{len(bad)} bad requests among them refused")


def restrict():
    allowed = [300, 301, 302, 7000]
    for seed in range(1, 5):  # EOS is not among them: each runs to max_tokens
        c = completion(prompt="Hello", max_tokens=8, temperature=1, seed=seed, logprobs=0,
                       allowed_token_ids=allowed)["choices"][0]
        got = ids(c["logprobs"]["tokens"])
        assert c["finish_reason"] == "length" and len(got) == 8 and all(t in allowed for t in got), c
    tok = lambda s: json.loads(post("/tokenize", {"prompt": s, "add_special_tokens": False}))["tokens"]
    greedy = lambda **b: ids(completion(prompt="The weather today", max_tokens=12, logprobs=0, **b)["choices"][0]["logprobs"]["tokens"])
    base = greedy()
    checked = 0
    for t in base[:6]:
        word = json.loads(post("/detokenize", {"tokens": [t]}))["prompt"].strip()
        if not word:
            continue
        bad_seqs = [tok(word), tok(" " + word)]
        out = greedy(bad_words=[word])
        for b in bad_seqs:
            assert not any(out[i:i + len(b)] == b for i in range(len(out))), (word, b, out)
        if any(base[i:i + len(b)] == b for b in bad_seqs for i in range(len(base))):
            assert out != base, (word, out)
        if all(len(b) == 1 for b in bad_seqs):
            assert out == greedy(logit_bias={str(b[0]): -100 for b in bad_seqs}), (word, out)
        checked += 1
    assert checked > 0, base
    # Every allowed token banned (EOS alone allowed, before min_tokens): the sequence ends.
    eos = tok("<\uff5cend\u2581of\u2581sentence\uff5c>")
    assert len(eos) == 1, eos
    c = completion(prompt="Hello", max_tokens=8, min_tokens=4, allowed_token_ids=eos)["choices"][0]
    assert c["finish_reason"] == "stop" and c["text"] == "", c
    print(f"allowed_token_ids: sampled within the set; bad_words: {checked} words checked")


if sys.argv[1] == "prompt-logprobs":
    prompt_logprobs(int(sys.argv[4]), float(sys.argv[5]))
elif sys.argv[1] == "json-object":
    json_object()
elif sys.argv[1] == "choice":
    choice()
elif sys.argv[1] == "json-schema":
    json_schema()
elif sys.argv[1] == "regex":
    regex()
elif sys.argv[1] == "restrict":
    restrict()
elif sys.argv[1] == "grammar":
    grammar()
else:
    sys.exit("usage: output_checks.py prompt-logprobs URL KEY VOCAB TOL | json-object URL KEY | choice URL KEY | json-schema URL KEY | regex URL KEY | restrict URL KEY | grammar URL KEY")
