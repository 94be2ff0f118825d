"""The script riskbatch is measured against: what a competent engineer writes
in an afternoon with asyncio + aiohttp. It reads the participant CSV, sends one
risk request per row (64 in flight over a keep-alive pool), reads both layers
of the reply and writes the rows with their risk level to a CSV file. No
checkpoint, no retry, no rate limit: it only has to be fast.

Usage: python3 bench/baseline_aiohttp.py BASE_URL INPUT.csv OUTPUT.csv [CONCURRENCY]
Prints rows/s on stdout.
"""

import asyncio
import csv
import json
import sys
import time

import aiohttp

SERVICE = "wxd8a88093cf541a77"
FIELDS = [  # sale_risk field <- input column
    ("mchcode", "mch_code"),
    ("phonenum", "phone"),
    ("certid", "cert_id"),
    ("wifibssid", "wifi_bssid"),
    ("clientip", "client_ip"),
    ("deviceid", "device_id"),
]


async def token(session, base):
    body = {"grant_type": "client_credential", "appid": "wxbench", "secret": "bench-secret"}
    async with session.post(f"{base}/cgi-bin/stable_token", json=body) as reply:
        return (await reply.json(content_type=None))["access_token"]


async def worker(session, url, rows, results):
    while True:
        try:
            i, row = rows.pop()
        except IndexError:
            return
        risk = {name: row[col] for name, col in FIELDS if row.get(col)}
        body = {
            "service": SERVICE,
            "api": "weopensecriskservice",
            "data": {"openid": row["openid"], "serviceid": 3, "sale_risk": risk},
            "client_msg_id": f"m{i}",
        }
        try:
            async with session.post(url, json=body) as reply:
                outer = await reply.json(content_type=None)
            inner = json.loads(outer["data"]) if outer.get("errcode") == 0 else {}
            level = inner.get("data", {}).get("risklevel")
            status = "ok" if inner.get("code") == 0 else "failed"
        except (aiohttp.ClientError, ValueError, KeyError, asyncio.TimeoutError):
            level, status = None, "failed"
        results[i] = (level, status)


async def main():
    base, source, target = sys.argv[1:4]
    concurrency = int(sys.argv[4]) if len(sys.argv) > 4 else 64
    with open(source, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames
        rows = list(reader)
    started = time.monotonic()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        url = f"{base}/wxa/servicemarket?access_token={await token(session, base)}"
        queue = list(enumerate(rows))
        queue.reverse()
        results = [None] * len(rows)
        await asyncio.gather(*(worker(session, url, queue, results) for _ in range(concurrency)))
    with open(target, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header + ["risk_level", "status"])
        for row, (level, status) in zip(rows, results):
            writer.writerow([row[c] for c in header] + ["" if level is None else level, status])
    elapsed = time.monotonic() - started
    print(f"{len(rows)} rows in {elapsed:.1f} s: {len(rows) / elapsed:,.0f} rows/s")


asyncio.run(main())
