#!/usr/bin/env bash
# riskbatch side by side with what users would pick instead, in one run, on
# one light mock: ../shared/peers/mockfast (about 6 µs of CPU per request, so
# the client is what gets measured). Peers: async_parallel.py (asyncio +
# aiohttp, what a competent Python engineer writes), qsv fetchpost when
# $QSV names a qsv built with it, and wrk as the ceiling; at 50 ms, also on
# `riskbatch sim`, which holds 50 ms on average where mockfast takes about
# 51.5 ms (wrk's mean latency on each is printed). Then riskbatch's
# peak memory on 10k / 1M (/ 10M with --big) rows for run, check and report,
# and its pacing (bench/pacing.sh, measured at the simulator, per second).
#   bench/run.sh [--quick] [--big]
# One table on stdout; work files under target/bench.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=""; big=""
for arg in "$@"; do
    case $arg in --quick) quick=1 ;; --big) big=1 ;; *) echo "unknown option $arg" >&2; exit 2 ;; esac
done
peers=$(cd ../shared/peers && pwd)
work=$PWD/target/bench
mkdir -p "$work"
rows_a=${ROWS_0MS:-$([ -n "$quick" ] && echo 50000 || echo 400000)}
rows_b=${ROWS_50MS:-$([ -n "$quick" ] && echo 10000 || echo 64000)}
conc=64
export WECHAT_APPID=wxbench WECHAT_SECRET=bench-secret RISKBATCH_LOG=warn
export RISKBATCH_TOKEN_DIR=$work/tokens

log() { echo "[bench] $*" >&2; }
log "building riskbatch and mockfast"
cargo build --release --quiet
cargo build --release --quiet --manifest-path "$peers/mockfast/Cargo.toml" --target-dir target/mockfast
bin=$PWD/target/release/riskbatch
mock_bin=$PWD/target/mockfast/release/mockfast
py=$PWD/target/pyenv/bin/python
if ! "$py" -c 'import aiohttp' 2>/dev/null; then
    log "installing aiohttp into target/pyenv"
    python3 -m venv target/pyenv
    target/pyenv/bin/pip install -q --disable-pip-version-check -r "$peers/requirements.txt"
fi
if ! command -v wrk >/dev/null && [ "$(id -u)" = 0 ]; then
    log "installing wrk"
    apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; } || true
fi
have_wrk=$(command -v wrk || true)
# qsv: $QSV, else one built by a copy of the peers' script under target/qsvb
# (`mkdir -p target/qsvb/qsv && cp ../shared/peers/qsv/build_qsv.sh target/qsvb/qsv/
#  && target/qsvb/qsv/build_qsv.sh`, about 12 minutes), else the peers' own.
qsv=${QSV:-$PWD/target/qsvb/.qsv-root/bin/qsv}
[ -x "$qsv" ] || qsv=$peers/.qsv-root/bin/qsv
"$qsv" fetchpost --help >/dev/null 2>&1 || qsv=""

data() { # rows -> the same participants CSV for every peer
    local path=$work/participants-$1.csv
    [ -f "$path" ] || "$py" "$peers/gen_participants.py" --rows "$1" --out "$path" --seed 7 >/dev/null
    echo "$path"
}

mock_pid=""
serve() { # CMD... : starts a server that prints its 127.0.0.1:PORT; sets base and token
    "$@" >"$work/mock.out" 2>/dev/null &
    mock_pid=$!
    for _ in $(seq 50); do grep -q '127.0.0.1:[0-9]' "$work/mock.out" 2>/dev/null && break; sleep 0.1; done
    base="http://$(grep -o '127.0.0.1:[0-9]*' "$work/mock.out" | head -1)"
    token=$(curl -s "$base/cgi-bin/token?grant_type=client_credential&appid=$WECHAT_APPID&secret=$WECHAT_SECRET" \
        | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
}
start_mock() { serve "$mock_bin" --port 0 --latency-ms "$1" --workers 1 --exit-after 3600; }
# `riskbatch sim`, whose timer aims early so that its replies take the latency on average
start_sim() { serve "$bin" sim --listen 127.0.0.1:0 --latency "$1"; }
stop_mock() { [ -n "$mock_pid" ] && kill "$mock_pid" 2>/dev/null; wait "$mock_pid" 2>/dev/null || true; mock_pid=""; }
trap stop_mock EXIT
mock_cpu() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$mock_pid/stat"; }

# measure NAME ROWS CMD... : wall, CPU and peak RSS of CMD; sets the result vars
results=()
measure() {
    local name=$1 rows=$2; shift 2
    local before; before=$(mock_cpu)
    /usr/bin/time -f "%e %U %S %M" -o "$work/time.txt" "$@" >"$work/$name.out" 2>"$work/$name.err" \
        || log "$name exited $? (see $work/$name.err)"
    read -r wall user sys rss <"$work/time.txt"
    local mock; mock=$(awk -v a="$before" -v b="$(mock_cpu)" 'BEGIN {printf "%.1f", b - a}')
    local rps; rps=$(awk -v r="$rows" -v w="$wall" 'BEGIN {printf "%.0f", r / w}')
    local us; us=$(awk -v r="$rows" -v u="$user" -v s="$sys" 'BEGIN {printf "%.1f", (u + s) * 1e6 / r}')
    results+=("$scenario|$name|$rows|$rps|$us|$((rss / 1024))|$mock")
    log "$scenario / $name: $rps rows/s, $us µs CPU/row, $((rss / 1024)) MiB"
}

riskbatch_job() { # rows outdir rate -> job file, its state and outputs removed
    # Each run starts from nothing, as the Python peer's does: `--fresh`
    # would also time discarding the last bench's run of the same list.
    rm -rf "$work/.riskbatch/bench-$2" "$work/$2"
    cat >"$work/$2.toml" <<TOML
name = "bench-$2"
[input]
path = "$(data "$1")"
[input.columns]
openid = "openid"
phonenum = "phone"
clientip = "client_ip"
deviceid = "device_id"
[output]
dir = "$work/$2"
formats = ["parquet", "csv"]
[api]
base_url = "$base"
token = "client_credential"
[throttle]
rate = $3
concurrency = $conc
[cache]
ttl = "0s"
TOML
    echo "$work/$2.toml"
}

wrk_rps() { # seconds scenario -> requests/s; keeps the mean latency in $work/wrk-latency-$2
    wrk -t2 -c$conc -d"$1"s -s "$peers/wrk_post.lua" "$base/wxa/servicemarket?access_token=$token" 2>/dev/null \
        > "$work/wrk.out"
    awk '$1 == "Latency" { v = $2 + 0; if ($2 ~ /us$/) v /= 1000; if ($2 ~ /[0-9]s$/) v *= 1000; printf "%.2f", v }' \
        "$work/wrk.out" > "$work/wrk-latency-$2"
    awk '/Requests\/sec/ {printf "%.0f", $2}' "$work/wrk.out"
}

for scenario in "0 ms" "50 ms"; do
    if [ "$scenario" = "0 ms" ]; then latency=0; rows=$rows_a; else latency=50; rows=$rows_b; fi
    input=$(data "$rows")
    start_mock "$latency"
    log "scenario $scenario on $base, $rows rows"
    if [ -n "$have_wrk" ]; then
        results+=("$scenario|wrk -t2 -c$conc (ceiling)|–|$(wrk_rps 10 "$latency")|–|–|–")
    fi
    measure "async_parallel.py c=$conc" "$rows" "$py" "$peers/async_parallel.py" --input "$input" \
        --output "$work/ap.csv" --base-url "$base" --concurrency $conc --rate 0 --run-id "b$latency" --log-every 600
    rm -f "$work/ap.csv.ckpt.jsonl"
    if [ -n "$qsv" ]; then
        # qsv sends one row at a time when the server is slow: fewer rows at 50 ms.
        qsv_rows=$rows
        [ "$latency" -gt 0 ] && qsv_rows=${QSV_ROWS_50MS:-500}
        qsv_input=$(data "$qsv_rows")
        measure "qsv fetchpost" "$qsv_rows" bash -c "$qsv enum --new-column url --constant '$base/wxa/servicemarket?access_token=$token' $qsv_input \
            | $qsv fetchpost url --payload-tpl $peers/qsv/risk_payload.tpl --jaq '.data | fromjson | .data.risklevel' \
            --new-column risk_level --rate-limit 0 --output $work/qsv.csv"
    fi
    measure "riskbatch c=$conc" "$rows" "$bin" run "$(riskbatch_job "$rows" "rb$latency" 1000000)" --fresh --progress never
    stop_mock
done

# mockfast's replies take about 51.5 ms at 50 ms, so no client reaches 98 % of
# the ideal on it; the simulator holds 50 ms on average. One simulator per
# client, so that its per-second arrival counts are that client's alone.
scenario="50 ms, sim"
rows=$rows_b
input=$(data "$rows")
log "scenario $scenario, $rows rows"
if [ -n "$have_wrk" ]; then
    start_sim 50ms
    results+=("$scenario|wrk -t2 -c$conc (ceiling)|–|$(wrk_rps 10 sim)|–|–|–")
    stop_mock
fi
start_sim 50ms
measure "async_parallel.py c=$conc" "$rows" "$py" "$peers/async_parallel.py" --input "$input" \
    --output "$work/ap.csv" --base-url "$base" --concurrency $conc --rate 0 --run-id "bsim" --log-every 600
rm -f "$work/ap.csv.ckpt.jsonl"
stop_mock
start_sim 50ms
measure "riskbatch c=$conc" "$rows" "$bin" run "$(riskbatch_job "$rows" "rbsim" 1000000)" --fresh --progress never
curl -s "$base/_sim/stats?seconds=1" >"$work/sim-50-stats.json"
stop_mock

scenario="memory"
start_mock 0
sizes=(10000 1000000)
[ -n "$big" ] && sizes+=(10000000)
for n in "${sizes[@]}"; do
    job=$(riskbatch_job "$n" "mem$n" 1000000)
    measure "run $n rows" "$n" "$bin" run "$job" --fresh --progress never
    measure "check $n rows" "$n" "$bin" check "$job"
    measure "report $n rows" "$n" "$bin" report "$job"
done
stop_mock

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "–" }'; }
echo
echo "## riskbatch and its peers on mockfast, and at 50 ms on the simulator ($(date -u +%Y-%m-%d), $(nproc) cores)"
echo
echo "| scenario | client | rows | rows/s | CPU µs/row | peak RSS MiB | mock CPU s | riskbatch rows/s ÷ this |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
for line in "${results[@]}"; do
    IFS='|' read -r scen name rows rps us rss mock <<<"$line"
    ours=""
    for other in "${results[@]}"; do
        IFS='|' read -r s2 n2 _ r2 _ _ _ <<<"$other"
        [[ $s2 == "$scen" && $n2 == riskbatch* ]] && ours=$r2
    done
    vs="–"
    [[ -n $ours && $name != riskbatch* && $scen != memory ]] && vs=$(ratio "$ours" "$rps")
    echo "| $scen | $name | $rows | $rps | $us | $rss | $mock | $vs |"
done
echo
echo "At 50 ms with $conc in flight the ideal is $((conc * 1000 / 50)) rows/s."
if [ -s "$work/wrk-latency-50" ]; then
    awk -v l="$(cat "$work/wrk-latency-50")" -v c=$conc 'BEGIN {
        printf "Under wrk the mock answered in %.2f ms on average (it sleeps with tokio, whose timer rounds up to the next millisecond), ", l
        printf "so %d in flight carry at most %.0f rows/s (%.1f %% of the ideal).\n", c, c * 1000 / l, 100 * 50 / l }'
fi
if [ -s "$work/wrk-latency-sim" ] && [ -s "$work/sim-50-stats.json" ]; then
    python3 - "$work/sim-50-stats.json" "$(cat "$work/wrk-latency-sim")" "$conc" <<'PY'
import json, sys
stats, latency, conc = json.load(open(sys.argv[1])), float(sys.argv[2]), int(sys.argv[3])
full = stats["per_second"][1:-1]          # the first and last seconds are partial
ideal = conc * 1000 / 50
mean = sum(full) / len(full) if full else 0.0
print(f"At the simulator (50 ms, `riskbatch sim`), wrk measured {latency:.2f} ms a reply; riskbatch's requests "
      f"arrived at {mean:.1f} a second over {len(full)} full seconds ({100 * mean / ideal:.1f} % of the ideal {ideal:.0f}).")
PY
fi
echo
echo "## Pacing (bench/pacing.sh, counted per second at the simulator)"
echo
[ -n "$quick" ] && export SECONDS_PER_RATE=${SECONDS_PER_RATE:-10}
bench/pacing.sh
