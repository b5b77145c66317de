# Shared by the end-to-end shell tests and perf scripts (source it): pass/fail counters, the
# mpiexec command line, a CPU server on a checkpoint started and waited for, rank 0's pid.
# The caller sets `mpiexec`, `bin` (dpa_serve) and `work` (a scratch directory) first.

M="$mpiexec --oversubscribe --bind-to none"; [[ $(id -u) -eq 0 ]] && M="$M --allow-run-as-root"
export OMPI_MCA_mpi_yield_when_idle=1
fails=0; passes=0
ok() { passes=$((passes+1)); echo "ok: $*"; }
bad() { fails=$((fails+1)); echo "FAIL: $*"; }
finish() { echo "$passes passed, $fails failed"; [[ $fails -eq 0 ]]; }

# batch_canon OUT.jsonl: a batch output's token ids and finish reasons per custom_id (error lines by
# custom_id and status) as one canonical line, to compare runs.
batch_canon() { /usr/bin/env python3 - "$1" <<'PY'
import json, sys
rows = []
for line in open(sys.argv[1]):
    o = json.loads(line)
    r = o.get("response")
    if r and r["status_code"] == 200:
        rows.append((str(o["custom_id"]), [c["token_ids"] for c in r["body"]["choices"]],
                     [c["finish_reason"] for c in r["body"]["choices"]]))
    else:
        rows.append((str(o["custom_id"]), "error", r["status_code"] if r else o["error"]["code"]))
rows.sort(key=lambda x: x[0])
print(json.dumps(rows))
PY
}

# start_server NAME NP MODEL ARGS...: `serve --device cpu` under mpiexec, waits for its ready file
# (up to 120 s); sets mpirun_pid, url and log. Extra mpiexec options may come in MPI_EXTRA.
mpirun_pid=""; url=""; log=""
start_server() {
  local name=$1 np=$2 model=$3; shift 3
  log="$work/$name.log"
  rm -f "$work/$name.ready"
  $M ${MPI_EXTRA:-} -np "$np" "$bin" serve --device cpu --model "$model" --port 0 \
    --ready-file "$work/$name.ready" "$@" >"$log" 2>&1 &
  mpirun_pid=$!
  for _ in $(seq 1 600); do
    [[ -s "$work/$name.ready" ]] && break
    kill -0 "$mpirun_pid" 2>/dev/null || break
    sleep 0.2
  done
  if [[ ! -s "$work/$name.ready" ]]; then
    bad "$name: the server did not become ready; its log:"; tail -30 "$log"
    kill "$mpirun_pid" 2>/dev/null; wait "$mpirun_pid" 2>/dev/null
    return 1
  fi
  url=$(sed -n 's/^ready url=//p' "$work/$name.ready")
}

# The dpa_serve processes under mpirun_pid, and the one of world rank 0 among them.
rank_pids() { pgrep -P "$mpirun_pid"; }
rank0_pid() {
  local p
  for p in $(rank_pids); do
    tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=0' && { echo "$p"; return; }
  done
}

# stop_server: SIGTERM to rank 0 (a drain), then the job's exit code in `server_rc`.
stop_server() {
  local r0; r0=$(rank0_pid)
  [[ -n "$r0" ]] && kill -TERM "$r0"
  for _ in $(seq 1 300); do kill -0 "$mpirun_pid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$mpirun_pid" 2>/dev/null && kill -KILL "$mpirun_pid"
  wait "$mpirun_pid"; server_rc=$?
}

# disconnect_storm BENCH_SERVING N: N streaming clients start long completions (1,500 tokens; the
# model must take 1,532-token sequences) against $url; after
# they stream for a while the client process is killed (every socket closes at once). Then polls
# /get_load for up to 60 s until every replica holds no request and all its KV pages are free
# again. Sets storm_ms (time to recover after the kill) and storm_streams (replicas' requests
# before the kill); returns non-zero if the server did not recover.
disconnect_storm() {
  local client=$1 n=$2 load t0 t1
  "$client" --base-url "$url" --max-concurrency "$n" --num-prompts "$n" --random-input-len 32 \
    --random-output-len 1500 >"$work/storm_client.txt" 2>&1 &
  local cpid=$!
  storm_streams=0
  for _ in $(seq 1 300); do  # until every client is admitted (or 30 s)
    sleep 0.1
    load=$(curl -s "$url/get_load")
    storm_streams=$(grep -o '"num_reqs":[0-9]*' <<<"$load" | awk -F: '{s += $2} END {print s + 0}')
    [[ $storm_streams -ge $n ]] && break
  done
  sleep 2  # let them stream
  kill -KILL "$cpid"; wait "$cpid" 2>/dev/null
  if [[ $storm_streams -lt $n ]]; then
    echo "only $storm_streams of $n requests reached the engine: $(head -3 "$work/storm_client.txt")"; return 1
  fi
  t0=$(date +%s%N)
  for _ in $(seq 1 600); do
    load=$(curl -s "$url/get_load")
    if [[ -n $load ]] && ! grep -qE '"num_reqs":[1-9]|"frontend_inflight":[1-9]' <<<"$load" &&
       /usr/bin/env python3 -c 'import json,sys; d=json.loads(sys.argv[1]); sys.exit(0 if all(r["kv_free_blocks"]==r["kv_total_blocks"] for r in d) else 1)' "$load" 2>/dev/null; then
      t1=$(date +%s%N); storm_ms=$(( (t1 - t0) / 1000000 )); return 0
    fi
    sleep 0.1
  done
  storm_ms=-1; echo "after the storm: $load"; return 1
}
