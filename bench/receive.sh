#!/usr/bin/env bash
# `riskbatch receive` under load: `riskbatch sim --push-to` pushes safe-mode
# (AES) XML verdicts at RATE per second for SECONDS over loopback; then the
# verdicts stored in the job's checkpoint are counted (each must be there once).
#   bench/receive.sh [RATE] [SECONDS]       (default: 1000 30)
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-1000}
seconds=${2:-30}
bin=${RISKBATCH:-target/release/riskbatch}
work=target/bench/receive
rm -rf "$work" && mkdir -p "$work/jobs"
cat > "$work/jobs/push.toml" <<'JOB'
name = "push"
[input]
path = "../participants.csv"
[push]
token_env = "WECHAT_PUSH_TOKEN"
aes_key_env = "WECHAT_PUSH_AES_KEY"
JOB
export WECHAT_PUSH_TOKEN=bench-push-token
export WECHAT_PUSH_AES_KEY=kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR
export WECHAT_APPID=wxsim000000000000 RISKBATCH_LOG=warn
"$bin" receive "$work/jobs/push.toml" --listen 127.0.0.1:0 > "$work/receive.out" 2> "$work/receive.err" &
rx=$!
trap 'kill $rx 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q listening "$work/receive.out" 2>/dev/null && break; sleep 0.1; done
url=$(awk '{print $3}' "$work/receive.out")
"$bin" sim --push-to "$url/wechat" --push-count $((rate * seconds)) --push-rate "$rate" \
    --push-concurrency 32 --push-mode safe --push-format xml | tee "$work/push.json"
kill -TERM "$rx"; wait "$rx" || true
python3 - "$work/jobs/.riskbatch/push/checkpoint.sqlite" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
n, distinct = db.execute("select count(*), count(distinct global_no) from verdicts").fetchone()
print(f"stored {n} verdicts, {distinct} distinct")
PY
