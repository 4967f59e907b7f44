#!/usr/bin/python3
"""A new version published under load: the latency of the first requests it answers.

Keep-alive clients (threads, one connection each) send single-image /predict requests for a
model; after STEADY seconds a new version of it is published as a trainer publishes one (model.pt
written, then meta.json with the version one higher, each by an atomic rename); the clients go
on until AFTER seconds past the first answer from it. Prints the p99 of the requests answered
in the steady second before the publish, and of the first COUNT answered by the new version
(the issue's measure: at most 2x the steady p99), of all answered from the publish to a second
after the switch, and how long after the publish the new version first answered (it is loaded
and warmed off the request path meanwhile; the old one answers). The client is Python: its own
time is in every latency, the same in both.

  bench/publish_latency.py --url http://127.0.0.1:PORT --body BODY.json --model-dir HOME/models/ID
"""
import argparse
import http.client
import json
import os
import re
import shutil
import threading
import time
import urllib.parse

VERSION = re.compile(rb'"version":(\d+)')


def client(url, body, stop, out):
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    headers = {"Content-Type": "application/json"}
    while not stop.is_set():
        start = time.monotonic()
        conn.request("POST", "/predict", body, headers)
        reply = conn.getresponse()
        data = reply.read()
        end = time.monotonic()
        m = VERSION.search(data)
        out.append((end, end - start, int(m.group(1)) if reply.status == 200 and m else -1))


def publish(model_dir):
    """As a trainer: model.pt first, then meta.json with the version one higher."""
    shutil.copyfile(os.path.join(model_dir, "model.pt"), os.path.join(model_dir, ".model.pt.tmp"))
    os.replace(os.path.join(model_dir, ".model.pt.tmp"), os.path.join(model_dir, "model.pt"))
    with open(os.path.join(model_dir, "meta.json")) as f:
        meta = json.load(f)
    meta["version"] += 1
    with open(os.path.join(model_dir, ".meta.json.tmp"), "w") as f:
        json.dump(meta, f)
    os.replace(os.path.join(model_dir, ".meta.json.tmp"), os.path.join(model_dir, "meta.json"))
    return meta["version"]


def p99(latencies):
    s = sorted(latencies)
    return s[min(len(s) - 1, int(0.99 * len(s)))] * 1e3 if s else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--body", required=True)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--steady", type=float, default=3.0)
    ap.add_argument("--after", type=float, default=2.0)
    ap.add_argument("--count", type=int, default=100)
    a = ap.parse_args()
    body = open(a.body, "rb").read()
    stop = threading.Event()
    outs = [[] for _ in range(a.clients)]
    threads = [threading.Thread(target=client, args=(a.url, body, stop, out)) for out in outs]
    for t in threads:
        t.start()
    time.sleep(a.steady)  # pacing: the steady load runs before the publish
    published = time.monotonic()
    version = publish(a.model_dir)
    deadline = published + 60
    first = None
    while first is None and time.monotonic() < deadline:
        time.sleep(0.05)  # polls the clients' records for the first answer of the new version
        answered = [r[0] for out in outs for r in list(out) if r[2] == version]
        first = min(answered) if answered else None
    if first is not None:
        time.sleep(a.after)
    stop.set()
    for t in threads:
        t.join()
    rows = sorted(r for out in outs for r in out)
    failed = sum(1 for r in rows if r[2] < 0)
    steady = [r[1] for r in rows if published - 1.0 <= r[0] < published]
    new = [r[1] for r in rows if r[2] == version][: a.count]
    # Every request answered from the publish to a second after the switch: the load and warm-up
    # ran beside them (on the cache's thread), then the switch.
    around = [r[1] for r in rows if published <= r[0] < first + 1.0] if first is not None else []
    result = {"steady_p99_ms": round(p99(steady), 3), "steady_requests": len(steady),
              "new_version": version, "first_new_p99_ms": round(p99(new), 3), "first_new_requests": len(new),
              "first_answer_after_publish_ms": round((first - published) * 1e3, 1) if first else None,
              "publish_to_switch_plus_1s_p99_ms": round(p99(around), 3), "publish_to_switch_plus_1s_requests": len(around),
              "failed": failed}
    result["ratio"] = round(result["first_new_p99_ms"] / result["steady_p99_ms"], 2) if steady and new else None
    print(json.dumps(result))


if __name__ == "__main__":
    main()
