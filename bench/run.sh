#!/usr/bin/env bash
# Benchmarks riskbatch against `riskbatch sim` (a separate process on loopback):
#   1. rows/s with no simulated latency (checkpoint and outputs included), 1M rows
#   2. rows/s with 50 ms latency at concurrency 64, against the ideal 64/0.05 = 1280/s
#   3. a second invocation of the completed 1M-row run (no call expected)
#   4. peak memory (max RSS) on 1M and 10M-row inputs (10M only with --big)
#   5. for reference, on the same machine and simulator: wrk's request rate with no
#      latency (the simulator's own ceiling, and the CPU a bare exchange costs) and with
#      50 ms, and a plain asyncio+aiohttp script (bench/baseline_aiohttp.py) on the same
#      1M rows (--reference, or alone with --reference-only; needs wrk and aiohttp)
# Usage: bench/run.sh [--big | --latency-only | --reference | --reference-only]
# Figures go to stdout; work files to target/bench.
set -euo pipefail
cd "$(dirname "$0")/.."
big=${1:-}

cargo build --release --quiet
bin=$PWD/target/release/riskbatch
work=$PWD/target/bench
mkdir -p "$work"
export WECHAT_APPID=wxbench WECHAT_SECRET=bench-secret RISKBATCH_LOG=warn

input() { # rows -> path (generated once)
  local path=$work/p$1.csv
  [ -f "$path" ] || "$bin" gen --rows "$1" --out "$path" --seed 2026 >/dev/null
  echo "$path"
}

sim_pid=""
start_sim() {
  "$bin" sim "$@" >"$work/sim.out" 2>/dev/null &
  sim_pid=$!
  for _ in $(seq 50); do grep -q listening "$work/sim.out" 2>/dev/null && break; sleep 0.1; done
  sim_url=$(head -1 "$work/sim.out" | awk '{print $NF}')
}
sim_cpu() { # CPU seconds the simulator has used so far
  awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$sim_pid/stat"
}
stop_sim() { kill "$sim_pid" 2>/dev/null || true; wait "$sim_pid" 2>/dev/null || true; }
trap stop_sim EXIT

job() { # name input concurrency -> job file
  cat >"$work/$1.toml" <<TOML
name = "$1"
[input]
path = "$2"
[input.columns]
openid = "openid"
phonenum = "phone"
certid = "cert_id"
clientip = "client_ip"
deviceid = "device_id"
wifibssid = "wifi_bssid"
mchcode = "mch_code"
[output]
dir = "out-$1"
[api]
base_url = "$sim_url"
[throttle]
rate = 1000000
concurrency = $3
[state]
dir = "state"
TOML
  rm -rf "$work/state/$1" "$work/out-$1"
  echo "$work/$1.toml"
}

measure() { # label job -> one line of figures
  local label=$1 jobfile=$2 started ended sim_cpu0 sim_cpu1
  sim_cpu0=$(sim_cpu)
  started=$(date +%s.%N)
  /usr/bin/time -f "%M %U %S" -o "$work/usage" "$bin" run "$jobfile" --progress never >/dev/null 2>"$work/stderr" || {
    echo "$label: run failed"; cat "$work/stderr"; return 1; }
  ended=$(date +%s.%N)
  sim_cpu1=$(sim_cpu)
  local summary=$work/out-$(basename "$jobfile" .toml)/summary.json
  python3 - "$label" "$summary" "$(cat "$work/usage")" "$started" "$ended" "$sim_url" "$sim_cpu0" "$sim_cpu1" <<'PY'
import json, sys, urllib.request
label, path, usage, t0, t1, url, sim0, sim1 = sys.argv[1:]
rss, user, system = usage.split()
s = json.load(open(path))
stats = json.load(urllib.request.urlopen(url + "/_sim/stats"))
wall = float(t1) - float(t0)
rows = s['rows']['total']
per_row = lambda seconds: seconds / rows * 1e6
print(f"{label}: {rows} rows, wall {wall:.1f}s, {rows/wall:,.0f} rows/s "
      f"(summary: {s['rows_per_second']:,.0f} rows/s over {s['elapsed_seconds']}s), "
      f"{s['calls']['sent']} calls, peak RSS {int(rss)/1024:.0f} MiB, "
      f"CPU per row: riskbatch {per_row(float(user) + float(system)):.1f} us (kernel {per_row(float(system)):.1f}), "
      f"simulator {per_row(float(sim1) - float(sim0)):.1f} us, "
      f"sim: {stats['risk_requests']} requests, max sends per request {stats['max_sends_per_request']}, "
      f"max in 1 s {stats['max_requests_in_1s']}")
PY
}

echo "# riskbatch benchmark, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores"

sim_token() {
  curl -s -X POST "$sim_url/cgi-bin/stable_token" \
    -d '{"grant_type":"client_credential","appid":"wxbench","secret":"bench-secret"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}

reference() {
  if command -v wrk >/dev/null; then
    local token sim_cpu0 sim_cpu1 rate wrk_seconds=10
    start_sim
    token=$(sim_token)
    sim_cpu0=$(sim_cpu)
    rate=$(SIM_TOKEN=$token /usr/bin/time -f "%U %S" -o "$work/wrk-cpu" wrk -t1 -c64 -d"${wrk_seconds}s" -s bench/wrk-risk.lua "$sim_url" | awk '/Requests\/sec/ {print $2}')
    sim_cpu1=$(sim_cpu)
    # The bare exchange's CPU bounds any client that shares the machine's
    # cores with the simulator: cores / (wrk + simulator CPU per request).
    python3 - "$rate" "$wrk_seconds" "$sim_cpu0" "$sim_cpu1" "$(cat "$work/wrk-cpu")" "$(nproc)" <<'PY'
import sys
rate, seconds, sim0, sim1, wrk_cpu, cores = sys.argv[1:]
requests = float(rate) * int(seconds)
sim = (float(sim1) - float(sim0)) / requests * 1e6
wrk = sum(map(float, wrk_cpu.split())) / requests * 1e6
print(f"reference: wrk -t1 -c64 against the simulator: {float(rate):,.0f} requests/s; CPU per request: "
      f"wrk {wrk:.1f} us, simulator {sim:.1f} us; with every core busy, a client that only "
      f"exchanges HTTP could reach at most {int(cores) / (wrk + sim) * 1e6:,.0f} requests/s here")
PY
    stop_sim
    # What any client can get at 50 ms: under load the simulator's replies take a little longer.
    start_sim --latency 50ms
    token=$(sim_token)
    SIM_TOKEN=$token wrk -t1 -c64 -d"${wrk_seconds}s" --latency -s bench/wrk-risk.lua "$sim_url" |
      awk -v ideal=1280 '/^ +Latency +[0-9]/ {mean=$2} /Requests\/sec/ {rate=$2}
           END {printf "reference: wrk -t1 -c64 against the simulator with 50 ms latency: %.0f requests/s = %.1f %% of 64 / 0.05 s (mean latency %s)\n", rate, 100 * rate / ideal, mean}'
    stop_sim
  else
    echo "reference: wrk not installed (apt-get install wrk); skipped"
  fi
  if python3 -c 'import aiohttp' 2>/dev/null; then
    start_sim
    echo "reference: asyncio+aiohttp script, 1M rows, concurrency 64: $(python3 bench/baseline_aiohttp.py "$sim_url" "$(input 1000000)" "$work/aiohttp.csv" 64)"
    stop_sim
  else
    echo "reference: python3 aiohttp not installed (pip install aiohttp); skipped"
  fi
}

if [ "$big" = "--reference-only" ]; then
  reference
  exit 0
fi

if [ "$big" != "--latency-only" ]; then
start_sim
measure "no latency, concurrency 64" "$(job fast "$(input 1000000)" 64)"
started=$(date +%s.%N)
/usr/bin/time -f "%M" -o "$work/rss" "$bin" run "$work/fast.toml" --progress never >/dev/null 2>&1
ended=$(date +%s.%N)
python3 -c "import sys; print(f'second run of the completed 1M-row run: {float(sys.argv[2])-float(sys.argv[1]):.2f}s, peak RSS {int(sys.argv[3])/1024:.0f} MiB')" "$started" "$ended" "$(cat "$work/rss")"
stop_sim
fi

start_sim --latency 50ms
measure "50 ms latency, concurrency 64 (ideal 1280 rows/s)" "$(job slow "$(input 50000)" 64)"
stop_sim

if [ "$big" = "--big" ]; then
  start_sim
  measure "memory, 10M rows, no latency, concurrency 64" "$(job big "$(input 10000000)" 64)"
  stop_sim
fi

if [ "$big" = "--reference" ]; then
  reference
fi
