#!/usr/bin/env bash
# Pacing, measured from the server's side: for each rate, a run of at least
# 30 s against `riskbatch sim` (no latency, no limit), then the simulator's
# per-second arrival counts. Prints one line per rate: the mean over the full
# seconds, the busiest clock second and the worst sliding 1-second window,
# each against `rate`.
#   bench/pacing.sh [RATES...]        (default: 10 40 100 300 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${RISKBATCH:-target/release/riskbatch}
work=${WORK:-target/bench/pacing}
seconds=${SECONDS_PER_RATE:-32}
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(10 40 100 300 1000)
mkdir -p "$work"

printf '%-6s %10s %8s %10s %12s %8s\n' rate mean mean% max_second worst_1s worst%
for rate in "${rates[@]}"; do
    dir="$work/rate-$rate"
    rm -rf "$dir" && mkdir -p "$dir"
    rows=$((rate * seconds))
    "$bin" gen --rows "$rows" --out "$dir/p.csv" --seed "$rate" >/dev/null
    "$bin" sim --listen 127.0.0.1:0 > "$dir/sim.out" 2>/dev/null &
    sim=$!
    for _ in $(seq 50); do grep -q http "$dir/sim.out" 2>/dev/null && break; sleep 0.1; done
    url=$(grep -o 'http://[0-9.:]*' "$dir/sim.out" | head -1)
    cat > "$dir/job.toml" <<JOB
name = "pacing"
[input]
path = "p.csv"
[input.columns]
openid = "openid"
[output]
dir = "out"
formats = ["parquet"]
[api]
base_url = "$url"
[throttle]
rate = $rate
concurrency = 16
[cache]
ttl = "0s"
JOB
    WECHAT_APPID=wxbench WECHAT_SECRET=bench RISKBATCH_TOKEN_DIR="$dir/tokens" \
        "$bin" run "$dir/job.toml" --progress never > "$dir/run.log" 2>&1 || true
    curl -s "$url/_sim/stats?seconds=1" > "$dir/stats.json"
    kill "$sim" 2>/dev/null; wait "$sim" 2>/dev/null || true
    python3 - "$rate" "$dir/stats.json" <<'PY'
import json, sys
rate = int(sys.argv[1]); s = json.load(open(sys.argv[2]))
full = s["per_second"][1:-1]          # the first and last seconds are partial
mean = sum(full) / len(full) if full else 0.0
worst = s["max_requests_in_1s"]
busiest = max(full, default=0)
print(f"{rate:<6} {mean:10.2f} {100*mean/rate:7.2f}% {busiest:10d} {worst:12d} {100*worst/rate:7.2f}%")
PY
done
