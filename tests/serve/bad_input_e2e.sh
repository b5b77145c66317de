#!/usr/bin/env bash
# Hostile input and access control over HTTP against `dpa_serve serve` (2 ranks, dp 2, CPU, a tiny
# random checkpoint, --api-key):
#  1. wrong types for every documented request field, non-object / invalid / truncated / deeply
#     nested JSON, context overflow, out-of-vocabulary and negative token ids, n over the cap, an
#     oversized body, bad Content-Length (larger than the body, non-numeric), an unknown route, a
#     wrong method; /v1/responses' fields (each refusal naming its param), an unknown
#     previous_response_id, bad input_items query parameters: each gets the right status and an
#     OpenAI error body {"error": {...}}; afterwards /health is 200 and a normal completion works;
#  2. access: every route of the route table but /health answers 401 without the key (and with a
#     wrong one) and not 401 with it; the server binds 127.0.0.1 when --host is not given;
#  3. request features against an oracle of the same server: truncation, special tokens, SGLang's
#     /generate, the reasoning split, prompt logprobs (lm-eval's echo + logprobs, vLLM's form),
#     response_format json_object and json_schema (guided_json, structured_outputs, SGLang's
#     json_schema), guided_choice.
#   bad_input_e2e.sh MPIEXEC DPA_SERVE WORKDIR
set -u
mpiexec=$1; bin=$2; work=$3
source "$(cd "$(dirname "$0")" && pwd)/../lib.sh"
rm -rf "$work"; mkdir -p "$work"
command -v curl >/dev/null || { echo "curl is not installed: skipped"; exit 77; }
PY=$(command -v /usr/bin/python3 || command -v python3) || { echo "python3 is not installed: skipped"; exit 77; }

"$bin" make-model --preset tiny --output "$work/tiny" --log-level warn >/dev/null || { echo "make-model failed"; exit 1; }

KEY=sk-test-$RANDOM$RANDOM
MAXB=1048576
# A short request read timeout (http_server.cpp; 60 s by default) for the slow-client checks.
export DPA_HTTP_READ_TIMEOUT_MS=1500
cleanup() { kill "$mpirun_pid" 2>/dev/null; wait "$mpirun_pid" 2>/dev/null; }
trap cleanup EXIT
MPI_EXTRA="-x DPA_HTTP_READ_TIMEOUT_MS" start_server server 2 "$work/tiny" --dp 2 --api-key "$KEY" \
  --reasoning-parser deepseek_r1 --max-request-bytes $MAXB --log-level info || exit 1
host=${url#http://}; port=${host##*:}; host=${host%:*}
echo "server at $url"

# ---------------------------------------------------------------- default bind address
[[ $host == 127.0.0.1 ]] && ok "ready line: bound to 127.0.0.1 without --host" || bad "ready url $url is not 127.0.0.1"
if command -v ss >/dev/null; then
  listen=$(ss -Hltn "sport = :$port" | awk '{print $4}')
  [[ $listen == "127.0.0.1:$port" ]] && ok "ss: listening on $listen only" || bad "ss: listening on '$listen'"
fi

A=(-H "Authorization: Bearer $KEY")
J=(-H 'Content-Type: application/json')
# check WANT METHOD PATH [curl args...]: the status, and for errors an OpenAI error body.
check() {
  local want=$1 method=$2 path=$3; shift 3
  local got
  got=$(curl -s -m 20 -o "$work/body" -w '%{http_code}' -X "$method" "$url$path" "$@")
  if [[ "$got" != "$want" ]]; then
    bad "$method $path $(printf '%q ' "$@" | tail -c 120) -> $got, want $want: $(head -c 300 "$work/body")"
    return
  fi
  # The error object as ApiError::body() and the transport's 413/400 write it.
  local re='^\{"error":\{"message":".+","type":"[A-Za-z_]+","param":(null|"[^"]*"),"code":'$want'\}\}$'
  if [[ $want -ge 400 && ! "$(cat "$work/body")" =~ $re ]]; then
    bad "$method $path -> $want but not an OpenAI error body: $(head -c 300 "$work/body")"
    return
  fi
  ok "$method $path -> $got $(head -c 90 "$work/body" | tr -d '\n')"
}
C() { check "$1" POST /v1/completions "${A[@]}" "${J[@]}" --data-binary "$2"; }
CH() { check "$1" POST /v1/chat/completions "${A[@]}" "${J[@]}" --data-binary "$2"; }

check 200 GET /health
curl -s -m 10 "${A[@]}" "$url/v1/models" >"$work/models"
model=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["data"][0]["id"])' "$work/models")
ctx=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["data"][0]["max_model_len"])' "$work/models")
curl -s -m 10 "${A[@]}" "$url/get_server_info" >"$work/info"
vocab=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["vocab_size"])' "$work/info")
echo "model=$model max_model_len=$ctx vocab=$vocab"
[[ -n $model && $ctx -gt 0 && $vocab -gt 0 ]] || { bad "no model card"; cat "$log"; exit 1; }

# ---------------------------------------------------------------- wrong types, completions
P='"prompt":"Hello","max_tokens":2'
for f in '"model":1' '"model":["x"]' '"prompt":5' '"prompt":{}' '"prompt":[]' '"prompt":[1,"a"]' '"prompt":[[]]' \
         '"prompt":[1.5]' '"prompt":true' '"max_tokens":"2"' '"max_tokens":2.5' '"max_tokens":-1' '"max_tokens":0' \
         '"max_tokens":1e300' '"temperature":"hot"' '"temperature":-1' '"temperature":[]' '"top_p":"x"' '"top_p":0' \
         '"top_p":2' '"top_k":1.5' '"top_k":-5' '"min_p":"x"' '"n":"2"' '"n":0' '"n":1.5' '"stop":5' '"stop":[1]' \
         '"stop":[""]' '"stop":{"a":1}' '"logprobs":"yes"' '"logprobs":-1' '"logprobs":1000' '"stream":"true"' \
         '"stream":1' '"stream_options":1' '"stream_options":{"include_usage":"yes"}' '"echo":1' '"seed":"x"' \
         '"seed":1.5' '"presence_penalty":"x"' '"presence_penalty":5' '"frequency_penalty":{}' \
         '"repetition_penalty":0' '"min_tokens":"x"' '"min_tokens":5' '"ignore_eos":"no"' '"stop_token_ids":"x"' \
         '"stop_token_ids":[-1]' '"skip_special_tokens":0' '"data_parallel_rank":"0"' '"data_parallel_rank":7' \
         '"return_tokens_as_token_ids":"x"' '"include_stop_str_in_output":[]' '"logit_bias":[1]' \
         '"logit_bias":{"x":1}' '"logit_bias":{"1.5":1}' '"logit_bias":{"-1":1}' '"logit_bias":{" 1":1}' \
         '"logit_bias":{"1":"x"}' '"logit_bias":{"1":101}' '"logit_bias":{"1":-1e300}' \
         '"response_format":{"type":"json_schema","json_schema":{}}' '"response_format":{"type":"yaml"}' \
         '"response_format":"json"' '"response_format":{}' '"suffix":"end"' '"suffix":1' '"best_of":3' \
         '"best_of":0' '"n":2,"best_of":"2"' '"guided_json":{"type":"string","pattern":"a","maxLength":1001}' '"guided_json":{"type":"string","pattern":"(?<=a)"}' '"echo":false,"max_tokens":0' \
         '"echo":true,"max_tokens":0,"min_tokens":1' '"prompt_logprobs":-1' '"prompt_logprobs":"2"' \
         '"prompt_logprobs":1000' '"prompt_logprobs":1,"stream":true' \
         '"guided_regex":"a(b"' '"guided_regex":"(a)\\1"' '"guided_regex":5' '"guided_regex":"(?=a)b"' \
         '"guided_regex":"a","guided_choice":["a"]' '"regex":"[z-a]"' '"guided_regex":"a{2,1}"' '"guided_choice":[]' '"guided_choice":"a"' '"guided_choice":[""]' '"guided_choice":[1]' \
         '"response_format":{"type":"json_object"},"guided_choice":["a"]' '"guided_choice":["a"],"min_tokens":1' \
         '"response_format":{"type":"json_object"},"min_tokens":1' '"guided_grammar":"root ::= x"' \
         '"structured_outputs":{"regex":"\\bx"}' '"structured_outputs":{"grammar":"x"}' '"structured_outputs":[]' '"guided_json":"{not json"' '"guided_json":5' \
         '"guided_json":{"enum":[]}' '"json_schema":{"$ref":"http://example.com/s.json"}' '"json_schema":{"type":"str"}' \
         '"guided_json":{"type":"object"},"guided_choice":["a"]' '"guided_json":{"type":"object"},"min_tokens":1' \
         '"response_format":{"type":"json_object"},"structured_outputs":{"json":{"type":"object"}}' \
         '"ebnf":"x"' '"allowed_token_ids":[]' '"allowed_token_ids":[-1]' '"allowed_token_ids":["1"]' \
         '"allowed_token_ids":1' "\"allowed_token_ids\":[$vocab]" '"bad_words":"x"' '"bad_words":[1]' '"bad_words":[""]' \
         '"bad_words":[" "]' '"bad_words":["x"],"guided_choice":["a"]' \
         '"allowed_token_ids":[1],"response_format":{"type":"json_object"}' \
         '"truncate_prompt_tokens":0' '"truncate_prompt_tokens":"x"' \
         '"truncate_prompt_tokens":-2' '"add_special_tokens":"no"'; do
  # A field given twice in an object: the later one wins in Boost.JSON, so put the bad one last.
  C 400 "{$P,$f}"
done
C 404 "{$P,\"model\":\"no-such-model\"}"
# priority under the default --scheduling-policy fcfs: refused on every generation route, naming
# the field and the flag that takes it (vLLM refuses too); 0 is the default and taken.
while read -r path body; do
  check 400 POST "$path" "${A[@]}" "${J[@]}" --data-binary "$body"
  grep -q '"param":"priority"' "$work/body" && grep -q -- '--scheduling-policy priority' "$work/body" ||
    bad "$path $body under fcfs: $(head -c 300 "$work/body")"
done <<'EOF3'
/v1/completions {"prompt":"Hello","max_tokens":2,"priority":1}
/v1/chat/completions {"messages":[{"role":"user","content":"Hi"}],"max_tokens":2,"priority":-3}
/v1/responses {"input":"Hi","max_output_tokens":2,"priority":1}
/generate {"text":"Hello","sampling_params":{"max_new_tokens":2},"priority":2}
EOF3
C 400 "{$P,\"priority\":\"1\"}"
C 400 "{$P,\"priority\":1.5}"
C 200 "{$P,\"priority\":0}"
C 400 '{"max_tokens":2}'  # no prompt
# ---------------------------------------------------------------- wrong types, chat
M1='"messages":[{"role":"user","content":"Hi"}],"max_tokens":2'
for f in '"messages":"hi"' '"messages":[]' '"messages":{}' '"messages":[1]' '"messages":[{"content":"x"}]' \
         '"messages":[{"role":1,"content":"x"}]' '"messages":[{"role":"user","content":5}]' \
         '"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]' \
         '"messages":[{"role":"user","content":[1]}]' '"model":false' '"max_tokens":"x"' \
         '"max_completion_tokens":"x"' '"max_completion_tokens":0' '"temperature":"x"' '"top_p":[]' '"n":100000' \
         '"stop":7' '"logprobs":1' '"logprobs":"true"' '"top_logprobs":"x"' '"top_logprobs":3' \
         '"logprobs":true,"top_logprobs":1000' '"stream":"x"' '"stream_options":"x"' '"seed":{}'; do
  CH 400 "{$M1,$f}"
done
# Tools: malformed definitions, tool_choice values without tools, naming no tool, or with another
# output structure, malformed past calls.
T='"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]'
for f in '"tools":{}' '"tools":[1]' '"tools":[{"type":"function"}]' '"tools":[{"type":"code","function":{"name":"f"}}]' \
         '"tools":[{"type":"function","function":{"name":""}}]' \
         '"tools":[{"type":"function","function":{"name":"f","parameters":[]}}]' '"tool_choice":"auto"' \
         '"tool_choice":"required"' "$T,\"tool_choice\":\"maybe\"" "$T,\"tool_choice\":1" \
         "$T,\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"get_time\"}}" \
         "$T,\"tool_choice\":\"required\",\"response_format\":{\"type\":\"json_object\"}" \
         '"messages":[{"role":"assistant","content":null,"tool_calls":{}}]' \
         '"messages":[{"role":"assistant","content":null,"tool_calls":[{"function":{"arguments":"{}"}}]}]' \
         '"messages":[{"role":"assistant","content":null,"tool_calls":[{"function":{"name":"f","arguments":[]}}]}]' \
         '"continue_final_message":true' '"continue_final_message":"yes"' \
         '"messages":[{"role":"assistant","content":"x"}],"continue_final_message":true,"add_generation_prompt":true'; do
  CH 400 "{$M1,$f}"
done
# "required" and a named function constrain the output to calls (output_checks.py json-schema
# checks what comes back).
CH 200 "{$M1,$T,\"tool_choice\":\"required\"}"
CH 200 "{$M1,$T,\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}}"
# ---------------------------------------------------------------- wrong types and refusals, /v1/responses
# R WANT PARAM BODY: the status, and the error's param (- for none).
R() {
  check "$1" POST /v1/responses "${A[@]}" "${J[@]}" --data-binary "$3"
  [[ $2 == - || $(grep -o '"param":"[^"]*"' "$work/body") == "\"param\":\"$2\"" ]] || bad "/v1/responses $3: param not $2: $(head -c 300 "$work/body")"
}
RI='"input":"Hi","max_output_tokens":2'
while read -r param f; do
  R 400 "$param" "{$RI,$f}"
done <<'EOF2'
input "input":5
input "input":[]
input "input":{}
input "input":[1]
input "input":[{"role":"tool","content":"x"}]
input "input":[{"role":"user","content":5}]
input "input":[{"role":"user"}]
input "input":[{"role":"user","content":[{"type":"input_image","image_url":"http://x/y.png"}]}]
input "input":[{"role":"user","content":[{"text":"no type"}]}]
input "input":[{"type":"item_reference","id":"msg_1"}]
input "input":[{"type":7}]
input "input":[{"type":"function_call","name":"f","arguments":"{}"}]
input "input":[{"type":"function_call","call_id":"c","name":"f","arguments":[]}]
input "input":[{"type":"function_call_output","call_id":"c"}]
max_output_tokens "max_output_tokens":"2"
max_output_tokens "max_output_tokens":0
max_output_tokens "max_output_tokens":-1
temperature "temperature":"hot"
top_p "top_p":2
stream "stream":"yes"
store "store":"yes"
instructions "instructions":5
metadata "metadata":{"k":1}
metadata "metadata":[]
previous_response_id "previous_response_id":5
background "background":true
background "background":"no"
include "include":["reasoning.encrypted_content"]
truncation "truncation":"auto"
conversation "conversation":"conv_1"
prompt "prompt":{"id":"pmpt_1"}
max_tool_calls "max_tool_calls":1
top_logprobs "top_logprobs":2
text "text":"json"
text.format "text":{"format":"json"}
text.format "text":{"format":{"type":"yaml"}}
text.format "text":{"format":{"type":"json_schema","schema":{"type":"object"}}}
text.format "text":{"format":{"type":"json_schema","name":"x"}}
text.format "text":{"format":{"type":"json_schema","name":"x","schema":[]}}
text.verbosity "text":{"verbosity":"high"}
tools "tools":[{"type":"web_search"}]
tools "tools":{}
tools "tools":[{"type":"function"}]
tool_choice "tool_choice":{"type":"file_search"}
tool_choice "tool_choice":"maybe"
reasoning "reasoning":"high"
stream_options "stream_options":{"include_obfuscation":false}
parallel_tool_calls "parallel_tool_calls":"no"
user "user":5
EOF2
R 200 - "{$RI}"  # the server answers between the refusals
R 404 previous_response_id "{$RI,\"previous_response_id\":\"resp_0123456789abcdef0123456789abcdef\"}"
grep -q 'evicted' "$work/body" || bad "unknown previous_response_id: the message does not say it may have been evicted"
R 404 model "{$RI,\"model\":\"no-such-model\"}"
R 400 - '{"max_output_tokens":2}'
grep -q '"param":"input"' "$work/body" || bad "/v1/responses without input: $(cat "$work/body")"
# A stored response: its input_items with bad query parameters, then good ones.
R 200 - "{$RI,\"store\":true}"
rid=$(sed -n 's/^{"id":"\(resp_[0-9a-f]*\)".*/\1/p' "$work/body")
[[ -n $rid ]] || bad "no response id in $(head -c 200 "$work/body")"
for q in limit=0 limit=101 limit=-1 limit=x limit=2.5 limit= order=up order=ASC after=msg_nope before=msg_1; do
  check 400 GET "/v1/responses/$rid/input_items?$q" "${A[@]}"
  grep -q "\"param\":\"${q%%=*}\"" "$work/body" || bad "input_items?$q: param not ${q%%=*}: $(cat "$work/body")"
done
check 400 GET "/v1/responses/$rid/input_items?after=%zz" "${A[@]}"
check 404 GET /v1/responses/resp_nope/input_items "${A[@]}"
check 405 PUT "/v1/responses/$rid/input_items" "${A[@]}"
check 405 POST "/v1/responses/$rid" "${A[@]}" "${J[@]}" --data-binary '{}'
check 200 GET "/v1/responses/$rid/input_items?limit=1&order=asc&include%5B%5D=message.input_image.image_url" "${A[@]}"
$PY -c 'import json,sys; b=json.load(open(sys.argv[1])); assert b["object"]=="list" and len(b["data"])==1 and b["data"][0]["content"]==[{"type":"input_text","text":"Hi"}] and b["first_id"]==b["data"][0]["id"] and b["has_more"] is False, b' \
  "$work/body" && ok "input_items: the stored input, one page" || bad "input_items: $(head -c 300 "$work/body")"
check 400 GET "/v1/responses/$rid?stream=true" "${A[@]}"
check 400 GET "/v1/responses/$rid?include%5B%5D=x&stream=1" "${A[@]}"
check 400 GET "/v1/responses/$rid?stream=%zz" "${A[@]}"
check 200 GET "/v1/responses/$rid?stream=false&x_stream=true" "${A[@]}"
check 200 GET "/v1/responses/$rid" "${A[@]}"
# ---------------------------------------------------------------- non-object, invalid, truncated, nested JSON
for b in '[]' '[1,2]' '"a string"' '42' '3.5' 'null' 'true' '' '{' '{"prompt":"Hello",' '{"prompt":"Hel' \
         '{"prompt":"Hello"} trailing' "{'prompt':'x'}" '{"prompt":"x",}' 'not json' $'\xff\xfe{}' \
         '{"prompt":"\ud800"}' '{"input":"x",'; do
  C 400 "$b"
  CH 400 "$b"
  R 400 - "$b"
done
$PY -c 'print("[" * 100000)' >"$work/nested1"
$PY -c 'print("{\"prompt\":" + "[" * 60000 + "]" * 60000 + "}")' >"$work/nested2"
$PY -c 'print("{\"a\":" * 20000 + "1" + "}" * 20000)' >"$work/nested3"
for n in 1 2 3; do C 400 "@$work/nested$n"; CH 400 "@$work/nested$n"; R 400 - "@$work/nested$n"; done
# ---------------------------------------------------------------- context, vocabulary, n
$PY -c "import sys; print('{\"prompt\":[' + ','.join(['1'] * ($ctx + 1)) + '],\"max_tokens\":1}')" >"$work/long_ids"
C 400 "@$work/long_ids"
C 400 "{\"prompt\":[1,2,3],\"max_tokens\":$ctx}"       # prompt + max_tokens over the context
C 400 "{\"prompt\":\"Hi\",\"max_tokens\":$((ctx + 1))}"
C 400 "{\"prompt\":[1,$vocab,2],\"max_tokens\":2}"
C 400 "{\"prompt\":[[1],[$((vocab + 1000))]],\"max_tokens\":2}"
C 400 '{"prompt":[1,-1,2],"max_tokens":2}'
C 400 '{"prompt":[1,-9223372036854775808],"max_tokens":2}'
C 400 '{"prompt":[1,18446744073709551615],"max_tokens":2}'
C 400 '{"prompt":[1,1e30],"max_tokens":2}'
C 400 '{"prompt":"Hello","max_tokens":2,"n":1000}'
C 400 "{\"prompt\":\"Hello\",\"max_tokens\":2,\"logit_bias\":{\"$vocab\":1}}"
CH 400 "{$M1,\"n\":17}"
check 400 POST /detokenize "${A[@]}" "${J[@]}" --data-binary "{\"tokens\":[1,$vocab]}"
check 400 POST /detokenize "${A[@]}" "${J[@]}" --data-binary '{"tokens":[-1]}'
check 400 POST /detokenize "${A[@]}" "${J[@]}" --data-binary '{"tokens":"x"}'
check 400 POST /tokenize "${A[@]}" "${J[@]}" --data-binary '{"prompt":5}'
check 400 POST /tokenize "${A[@]}" "${J[@]}" --data-binary '[]'
# ---------------------------------------------------------------- size, Content-Length, routes, methods
$PY -c "print('{\"prompt\":\"' + 'a' * ($MAXB + 10) + '\"}')" >"$work/big"
C 413 "@$work/big"
check 413 POST /tokenize "${A[@]}" "${J[@]}" -H 'Expect:' --data-binary "@$work/big"
check 404 GET /no/such/route "${A[@]}"
check 404 POST /v1/embeddings "${A[@]}" "${J[@]}" --data-binary '{}'
check 404 GET /v1/models/no-such-model "${A[@]}"
check 405 GET /v1/completions "${A[@]}"
check 405 GET /v1/chat/completions "${A[@]}"
check 405 DELETE /v1/models "${A[@]}"
check 405 PUT /tokenize "${A[@]}"
check 405 POST /version "${A[@]}"
# Raw HTTP: bad Content-Length (larger than the body, then the client half-closes; non-numeric;
# negative; two different), a garbage request line. RAW NAME WANT BYTES: WANT a status or "none"
# (the connection closes without an answer), within a timeout: never a hang.
raw() {
  local name=$1 want=$2 data=$3
  local got
  got=$($PY - "$host" "$port" "$data" <<'PY'
import socket, sys
host, port, data = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode().decode("unicode_escape").encode("latin-1")
s = socket.create_connection((host, port), timeout=5)
s.sendall(data)
try:
    s.settimeout(0.3)
    first = s.recv(65536)          # a server that answers before the body is complete
except socket.timeout:
    first = b""
s.settimeout(5.0)
s.shutdown(socket.SHUT_WR)         # the client gives up sending: the server must not hang
out = first
try:
    while True:
        b = s.recv(65536)
        if not b: break
        out += b
except socket.timeout:
    print("hang"); sys.exit()
if not out: print("none"); sys.exit()
line = out.split(b"\r\n", 1)[0].decode("latin-1")
body = out.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in out else b""
import json
try:
    ok = "error" in json.loads(body)
except Exception:
    ok = False
print(line.split(" ")[1] + ("" if ok else "-noerrorbody"))
PY
)
  [[ "$got" == "$want" ]] && ok "raw $name -> $got" || bad "raw $name -> $got, want $want"
}
AUTH="Authorization: Bearer $KEY"
raw "Content-Length larger than the body" 400 "POST /v1/completions HTTP/1.1\r\nHost: x\r\n$AUTH\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"prompt\":\"Hi\"}"
raw "non-numeric Content-Length" 400 "POST /v1/completions HTTP/1.1\r\nHost: x\r\n$AUTH\r\nContent-Length: abc\r\n\r\n{}"
raw "negative Content-Length" 400 "POST /v1/completions HTTP/1.1\r\nHost: x\r\n$AUTH\r\nContent-Length: -5\r\n\r\n{}"
raw "two Content-Lengths" 400 "POST /v1/completions HTTP/1.1\r\nHost: x\r\n$AUTH\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
raw "huge Content-Length" 400 "POST /v1/completions HTTP/1.1\r\nHost: x\r\n$AUTH\r\nContent-Length: 99999999999999999999\r\n\r\n{}"
raw "Content-Length over the limit" 413 "POST /v1/completions HTTP/1.1\r\nHost: x\r\n$AUTH\r\nContent-Length: $((MAXB + 1))\r\n\r\n{}"
raw "garbage request line" 400 "\x00\x01\x02 GARBAGE\r\n\r\n"
raw "bad chunked body" 400 "POST /v1/completions HTTP/1.1\r\nHost: x\r\n$AUTH\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"
raw "header block over 64 KiB" 400 "GET /health HTTP/1.1\r\nX-Big: $(head -c 70000 /dev/zero | tr '\0' a)\r\n\r\n"
raw "HTTP/1.0 without Content-Length" 400 "POST /v1/completions HTTP/1.0\r\n$AUTH\r\n\r\n{\"prompt\""

# A client that sends fewer body bytes than its Content-Length and then waits (the connection
# stays open), or never finishes its headers: 408 after the read timeout, not a connection held
# forever; an idle keep-alive connection is closed without an answer.
slow() {
  local name=$1 want=$2 data=$3 got
  got=$($PY - "$host" "$port" "$data" <<'PY2'
import socket, sys, time
host, port, data = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode().decode("unicode_escape").encode("latin-1")
s = socket.create_connection((host, port), timeout=10)
t0 = time.time()
s.sendall(data)
out = b""
try:
    while True:
        b = s.recv(65536)
        if not b: break
        out += b
except socket.timeout:
    print("hang"); sys.exit()
dt = time.time() - t0
st = out.split(b"\r\n", 1)[0].decode("latin-1").split(" ")[1] if out else "none"
print(st if dt < 8 else st + "-slow")
PY2
)
  [[ "$got" == "$want" ]] && ok "slow client: $name -> $got" || bad "slow client: $name -> $got, want $want"
}
slow "Content-Length larger than the body, connection kept open" 408 "POST /v1/completions HTTP/1.1\r\nHost: x\r\n$AUTH\r\nContent-Length: 100\r\n\r\n{\"prompt\":\"Hi\"}"
slow "headers never finished" 408 "GET /health HTTP/1.1\r\nHost: x\r\n"
slow "idle connection" none ""

# ---------------------------------------------------------------- still serving
check 200 GET /health
check 200 POST /v1/completions "${A[@]}" "${J[@]}" -d "{\"model\":\"$model\",\"prompt\":\"Hello\",\"max_tokens\":4}"
grep -q '"text"' "$work/body" || bad "completion after the bad input has no text: $(cat "$work/body")"
check 200 POST /v1/chat/completions "${A[@]}" "${J[@]}" -d "{$M1}"
R 200 - "{$RI}"
# What the refusals above leave alone: text output, an empty or null suffix, best_of equal to n.
C 200 '{"prompt":"Hello","max_tokens":2,"response_format":{"type":"text"},"suffix":"","best_of":2,"n":2}'
C 200 '{"prompt":"Hello","max_tokens":2,"structured_outputs":{},"guided_json":null,"json_schema":true}'
CH 200 "{$M1,\"response_format\":{\"type\":\"text\"},\"suffix\":null,\"logit_bias\":{\"5\":-100}}"
# Tools as clients send them: tool_choice auto (the default) and none, and a conversation that
# carries a past call (arguments as text and as an object) and its result.
CH 200 "{$M1,$T}"
CH 200 "{$M1,$T,\"tool_choice\":\"auto\"}"
CH 200 "{$M1,$T,\"tool_choice\":\"none\"}"
CH 200 "{$M1,\"tool_choice\":\"none\"}"
CH 200 '{"max_tokens":2,"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"{"}],"continue_final_message":true}'
CH 200 "{$T,\"max_tokens\":2,\"messages\":[{\"role\":\"user\",\"content\":\"Weather?\"},
  {\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",
   \"function\":{\"name\":\"get_weather\",\"arguments\":\"{}\"}},{\"id\":\"c2\",\"type\":\"function\",
   \"function\":{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}}]},
  {\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"18C\"},{\"role\":\"tool\",\"tool_call_id\":\"c2\",\"content\":\"19C\"}]}"

# truncate_prompt_tokens keeps the prompt's last tokens: the same answer as those tokens sent as
# ids; add_special_tokens false drops the BOS token from a string prompt.
C 200 '{"prompt":[5,6,7,8,9,10,11],"max_tokens":4,"temperature":0,"truncate_prompt_tokens":3,"echo":true}'
cp "$work/body" "$work/truncated"
C 200 '{"prompt":[9,10,11],"max_tokens":4,"temperature":0,"echo":true}'
$PY - "$work/truncated" "$work/body" <<'PYEOF' && ok "truncate_prompt_tokens: as the last 3 ids" || bad "truncate_prompt_tokens: $(head -c 300 "$work/truncated")"
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:3])
assert a["usage"]["prompt_tokens"] == 3 and a["choices"][0]["text"] == b["choices"][0]["text"], (a, b)
PYEOF
C 200 '{"prompt":"Hello there","max_tokens":1}'
with_bos=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["usage"]["prompt_tokens"])' "$work/body")
C 200 '{"prompt":"Hello there","max_tokens":1,"add_special_tokens":false}'
no_bos=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["usage"]["prompt_tokens"])' "$work/body")
[[ $no_bos -eq $((with_bos - 1)) ]] && ok "add_special_tokens false: $no_bos prompt tokens against $with_bos" ||
  bad "add_special_tokens false: $no_bos prompt tokens against $with_bos"

# SGLang's native /generate (its router and `bench_serving --backend sglang` send it): the same
# greedy tokens as /v1/completions, its shapes for one prompt, a batch, n, and a stream whose
# chunks carry the text so far; its bad input.
G() { check "$1" POST /generate "${A[@]}" "${J[@]}" --data-binary "$2"; }
C 200 '{"prompt":[5,6,7],"max_tokens":4,"temperature":0}'
cp "$work/body" "$work/native_ref"
G 200 '{"input_ids":[5,6,7],"sampling_params":{"max_new_tokens":4,"temperature":0},"rid":"r1"}'
cp "$work/body" "$work/native_one"
G 200 '{"input_ids":[[5,6,7],[8,9]],"sampling_params":{"max_new_tokens":4,"temperature":0}}'
cp "$work/body" "$work/native_batch"
G 200 '{"text":"Hello","sampling_params":{"max_new_tokens":3,"n":2,"temperature":0.7,"sampling_seed":1}}'
cp "$work/body" "$work/native_n"
G 200 '{"input_ids":[5,6,7],"sampling_params":{"max_new_tokens":4,"temperature":0},"stream":true}'
$PY - "$work/native_ref" "$work/native_one" "$work/native_batch" "$work/native_n" "$work/body" <<'PYEOF' && ok "/generate: shapes, tokens as /v1/completions, cumulative stream" || bad "/generate: $(head -c 400 "$work/native_one")"
import json, sys
ref, one, batch, n = (json.load(open(f)) for f in sys.argv[1:5])
text = ref["choices"][0]["text"]
assert one["text"] == text and len(one["output_ids"]) == 4, one
m = one["meta_info"]
assert m["id"] == "r1" and m["prompt_tokens"] == 3 and m["completion_tokens"] == 4, m
assert m["finish_reason"] == {"type": "length", "length": 4}, m
assert isinstance(batch, list) and len(batch) == 2 and batch[0]["text"] == text and batch[1]["meta_info"]["prompt_tokens"] == 2, batch
assert isinstance(n, list) and len(n) == 2 and all(c["meta_info"]["completion_tokens"] <= 3 for c in n), n
chunks = [json.loads(l[6:]) for l in open(sys.argv[5]) if l.startswith("data: {")]
assert open(sys.argv[5]).read().rstrip().endswith("data: [DONE]")
texts = [c["text"] for c in chunks]
assert texts[-1] == text and all(texts[i + 1].startswith(texts[i]) for i in range(len(texts) - 1)), texts
assert chunks[-1]["meta_info"]["finish_reason"]["type"] == "length" and chunks[0]["meta_info"]["finish_reason"] is None or len(chunks) == 1
PYEOF
for b in '{}' '{"text":"a","input_ids":[1]}' '{"text":5}' '{"input_ids":[-1]}' '{"text":"a","sampling_params":[{}]}' \
         '{"text":"a","sampling_params":{"max_new_tokens":0}}' '{"text":"a","sampling_params":{"beam_width":2}}' \
         '{"text":"a","sampling_params":{"temperature":"x"}}' '{"text":"a","sampling_params":{"regex":"a**"}}' \
         '{"text":"a","return_logprob":true,"top_logprobs_num":-1}' '{"text":"a","return_logprob":true,"logprob_start_len":-2}' \
         '{"text":"a","lora_path":"x"}' '{"text":["a","b"],"rid":"one"}' \
         '{"text":"a","rid":5}' '[1]'; do
  G 400 "$b"
done
G 404 '{"text":"a","model":"no-such-model"}'

# --reasoning-parser deepseek_r1 (this server's): an output that never closes </think> is all
# reasoning. The completion of the same forced tokens is the oracle for its text.
C 200 '{"prompt":"Hi","max_tokens":3,"logit_bias":{"100":100}}'
cp "$work/body" "$work/forced_completion"
CH 200 "{$M1,\"max_tokens\":3,\"logit_bias\":{\"100\":100}}"
$PY - "$work/forced_completion" "$work/body" <<'PYEOF' && ok "chat reasoning_content is the forced text, content null" || bad "reasoning split: $(head -c 300 "$work/body")"
import json, sys
text = json.load(open(sys.argv[1]))["choices"][0]["text"]
msg = json.load(open(sys.argv[2]))["choices"][0]["message"]
assert text and msg["reasoning_content"] == text and msg["content"] is None, (text, msg)
PYEOF
CH 200 "{$M1,\"max_tokens\":3,\"logit_bias\":{\"100\":100},\"stream\":true}"
$PY - "$work/forced_completion" "$work/body" <<'PYEOF' && ok "streamed: reasoning_content deltas add up to it, no content" || bad "reasoning stream: $(head -c 400 "$work/body")"
import json, sys
text = json.load(open(sys.argv[1]))["choices"][0]["text"]
reasoning, content = "", ""
for line in open(sys.argv[2]):
    if line.startswith("data: {"):
        d = json.loads(line[6:])["choices"][0]["delta"]
        reasoning += d.get("reasoning_content") or ""
        content += d.get("content") or ""
assert reasoning == text and content == "", (reasoning, content, text)
PYEOF
CH 200 "{$M1,\"max_tokens\":3,\"logit_bias\":{\"100\":100},\"include_reasoning\":false}"
$PY -c 'import json,sys; m=json.load(open(sys.argv[1]))["choices"][0]["message"]; assert "reasoning_content" not in m, m' \
  "$work/body" && ok "include_reasoning false drops it" || bad "include_reasoning false: $(head -c 300 "$work/body")"

# ---------------------------------------------------------------- prompt logprobs, structured output
# output_checks.py says what each checks; the decode and prefill paths of the CPU backend agree to
# ~5e-7 on the same positions.
here=$(cd "$(dirname "$0")" && pwd)
$PY "$here/output_checks.py" prompt-logprobs "$url" "$KEY" "$vocab" 1e-4 \
  && ok "prompt logprobs: decode's logprobs, cache-independent, ranks, stream" || bad "prompt logprobs"
$PY "$here/output_checks.py" json-object "$url" "$KEY" \
  && ok "response_format json_object: forced {}, sampled prefixes, chat, stream" || bad "response_format json_object"
$PY "$here/output_checks.py" choice "$url" "$KEY" && ok "guided_choice: one of the strings, or a prefix when cut" || bad "guided_choice"
$PY "$here/output_checks.py" json-schema "$url" "$KEY" \
  && ok "json_schema (response_format, guided_json, structured_outputs, /generate): stopped answers validate" \
  || bad "json_schema"
$PY "$here/output_checks.py" restrict "$url" "$KEY" \
  && ok "allowed_token_ids and bad_words: within the set, no bad word, logit_bias oracle" || bad "allowed_token_ids / bad_words"
$PY "$here/output_checks.py" regex "$url" "$KEY" \
  && ok "regex (guided_regex, structured_outputs, SGLang regex, /generate): stopped answers fullmatch" || bad "regex"

# ---------------------------------------------------------------- access: the route table
# Every route api_server.cpp serves, with the method it takes.
routes=("POST /v1/completions" "POST /v1/chat/completions" "GET /v1/models" "GET /v1/models/$model"
        "GET /health_generate" "GET /metrics" "GET /get_load" "GET /v1/get_load" "GET /get_server_info"
        "GET /flush_cache" "POST /flush_cache" "GET /version" "POST /tokenize" "POST /v1/tokenize"
        "POST /detokenize" "POST /v1/detokenize" "POST /generate" "GET /get_model_info" "GET /no/such/route"
        "DELETE /v1/completions" "GET /generate" "POST /v1/responses" "GET /v1/responses/$rid"
        "GET /v1/responses/$rid/input_items")
body_for() {
  case $1 in
    */chat/completions) echo "{$M1}" ;;
    */completions) echo "{\"prompt\":\"Hi\",\"max_tokens\":1}" ;;
    *tokenize) echo '{"prompt":"Hi"}' ;;
    *detokenize) echo '{"tokens":[1,2]}' ;;
    /generate) echo '{"text":"Hi","sampling_params":{"max_new_tokens":1}}' ;;
    /v1/responses) echo '{"input":"Hi","max_output_tokens":1}' ;;
    *) echo '{}' ;;
  esac
}
for r in "${routes[@]}"; do
  m=${r%% *}; p=${r#* }
  b=$(body_for "$p"); [[ $p == *detokenize ]] && b='{"tokens":[1,2]}'  # before *tokenize
  check 401 "$m" "$p" "${J[@]}" --data-binary "$b"
  check 401 "$m" "$p" "${J[@]}" -H "Authorization: Bearer wrong-$KEY" --data-binary "$b"
  check 401 "$m" "$p" "${J[@]}" -H "Authorization: $KEY" --data-binary "$b"
  want=200; [[ $p == /no/such/route ]] && want=404; [[ $m == DELETE || $r == "GET /generate" ]] && want=405
  check $want "$m" "$p" "${A[@]}" "${J[@]}" --data-binary "$b"  # with the key: not 401
done
check 200 GET /health
check 200 GET /v1/health
grep -q 'WWW-Authenticate: Bearer' <(curl -s -m 5 -D - -o /dev/null "$url/v1/models") \
  && ok "401 carries WWW-Authenticate: Bearer" || bad "401 without WWW-Authenticate"

kill -0 "$mpirun_pid" 2>/dev/null && ok "server still running" || bad "server died"
echo "bad_input_e2e: $passes passed, $fails failed"
if [[ $fails -gt 0 ]]; then echo "---- server log ----"; tail -100 "$log"; exit 1; fi
exit 0
