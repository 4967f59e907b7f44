#!/usr/bin/env python3
"""Open Inference Protocol (KServe v2, REST) conformance of ml_controller.

Written from the published protocol (KServe's docs/predict-api/v2/required_api.md and
Triton's binary tensor data and classification extensions), with Python's standard library
only, independent of mlswarm's own clients. A real trainer trains a 2-epoch model (so two
versions are kept); then every route and error case of the protocol is exercised against a
real controller with an API token. The example client (examples/kserve_client.py) is run too.

usage: conformance_test.py --controller BIN --trainer BIN --data-dir DIR --example CLIENT
"""
import argparse
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from harness import free_port, png_28x28, poll  # noqa: E402

TOKEN = "kserve-conformance-token-0123456789"
MODEL = "v2-model"
results = []


def check(name, ok, detail=""):
    results.append((name, bool(ok)))
    print(("PASS: " if ok else "FAIL: ") + name + (f" ({detail})" if detail and not ok else ""), flush=True)
    return ok


class Http:
    def __init__(self, url):
        self.url = url

    def call(self, method, path, body=None, headers=None, token=TOKEN):
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=dict(headers or {}))
        if token:
            request.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(request, timeout=60) as reply:
                return reply.status, {k.lower(): v for k, v in reply.headers.items()}, reply.read()
        except urllib.error.HTTPError as e:
            return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()

    def json(self, method, path, obj=None, **kw):
        body = None if obj is None else json.dumps(obj).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        status, headers, raw = self.call(method, path, body, headers, **kw)
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw
        return status, headers, parsed


def is_error_body(body):
    return isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"] != ""


def infer_request(images, datatype="FP32", nested=False, **extra):
    """images: list of 784-long lists of 0..1 floats."""
    flat = [v for img in images for v in img]
    if datatype == "UINT8":
        flat = [round(v * 255) for v in flat]
    data = [[[flat[(n * 28 + y) * 28:(n * 28 + y) * 28 + 28] for y in range(28)]] for n in range(len(images))] if nested else flat
    body = {"inputs": [{"name": "input", "shape": [len(images), 1, 28, 28], "datatype": datatype, "data": data}]}
    body.update(extra)
    return body


def check_health_and_metadata(http):
    status, _, body = http.call("GET", "/v2/health/live", token=None)
    check("GET /v2/health/live: 200, empty body, no token needed", status == 200 and body == b"", f"{status} {body!r}")
    status, _, body = http.call("GET", "/v2/health/ready", token=None)
    check("GET /v2/health/ready: 200, empty body", status == 200 and body == b"", f"{status} {body!r}")
    status, _, meta = http.json("GET", "/v2")
    check("GET /v2: server metadata with name, version, extensions",
          status == 200 and isinstance(meta.get("name"), str) and isinstance(meta.get("version"), str)
          and "binary_tensor_data" in meta.get("extensions", []) and "classification" in meta["extensions"], meta)
    status, _, meta = http.json("GET", f"/v2/models/{MODEL}")
    ok = (status == 200 and meta["name"] == MODEL and "1" in meta["versions"] and "2" in meta["versions"]
          and isinstance(meta["platform"], str) and meta["inputs"][0]["datatype"] == "FP32"
          and meta["inputs"][0]["shape"] == [-1, 1, 28, 28]
          and {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]} ==
          {"probabilities": ("FP32", [-1, 10]), "class_idx": ("INT64", [-1])})
    check("GET /v2/models/{m}: name, versions, platform, inputs and outputs with -1 batch", ok, meta)
    status, _, meta = http.json("GET", f"/v2/models/{MODEL}/versions/1")
    check("GET /v2/models/{m}/versions/{v}: the version's metadata", status == 200 and meta["name"] == MODEL, meta)
    for path, want in ((f"/v2/models/{MODEL}/ready", 200), (f"/v2/models/{MODEL}/versions/1/ready", 200),
                       ("/v2/models/no-such-model/ready", 404), (f"/v2/models/{MODEL}/versions/99/ready", 404)):
        status, _, body = http.call("GET", path)
        check(f"GET {path}: {want}", status == want and (want != 200 or body == b""), f"{status} {body!r}")
    status, _, config = http.json("GET", f"/v2/models/{MODEL}/config")
    check("GET /v2/models/{m}/config: max_batch_size, input dims without the batch, dynamic_batching",
          status == 200 and config["max_batch_size"] > 0 and config["input"][0]["dims"] == [1, 28, 28]
          and "dynamic_batching" in config, config)


def check_json_infer(http, images, labels):
    path = f"/v2/models/{MODEL}/infer"
    status, _, reply = http.json("POST", path, infer_request(images, id="req-1"))
    ok = status == 200 and reply["model_name"] == MODEL and reply["model_version"] == "2" and reply["id"] == "req-1"
    outs = {o["name"]: o for o in reply.get("outputs", [])} if status == 200 else {}
    probs, idx = outs.get("probabilities"), outs.get("class_idx")
    ok = ok and probs["datatype"] == "FP32" and probs["shape"] == [len(images), 10] and len(probs["data"]) == 10 * len(images)
    ok = ok and idx["datatype"] == "INT64" and idx["shape"] == [len(images)]
    ok = ok and all(abs(sum(probs["data"][i * 10:(i + 1) * 10]) - 1) < 1e-3 for i in range(len(images)))
    check("infer, JSON FP32 flat data: model_name, model_version, id, probabilities [N,10], class_idx [N]", ok, reply)
    right = sum(int(a == b) for a, b in zip(idx["data"], labels)) if ok else 0
    check("the answers are better than chance", right > len(images) * 0.3, f"{right}/{len(images)}")
    status, _, nested = http.json("POST", path, infer_request(images, nested=True))
    check("infer with nested data gives the same answer", status == 200 and
          nested["outputs"][1]["data"] == idx["data"], nested)
    status, _, uint8 = http.json("POST", path, infer_request(images, datatype="UINT8"))
    check("infer with UINT8 0..255 gives the same answer", status == 200 and uint8["outputs"][1]["data"] == idx["data"], uint8)
    status, _, only = http.json("POST", path, infer_request(images, outputs=[{"name": "class_idx"}]))
    check("requested outputs: only class_idx", status == 200 and [o["name"] for o in only["outputs"]] == ["class_idx"], only)
    status, _, top = http.json("POST", path, infer_request(images, outputs=[
        {"name": "probabilities", "parameters": {"classification": 3}}]))
    out = top["outputs"][0] if status == 200 else {}
    scores = [[float(s.split(":")[0]) for s in out.get("data", [])[i * 3:(i + 1) * 3]] for i in range(len(images))]
    ok = status == 200 and out["datatype"] == "BYTES" and out["shape"] == [len(images), 3] and all(
        s == sorted(s, reverse=True) for s in scores) and all(
        int(out["data"][i * 3].split(":")[1]) == idx["data"][i] for i in range(len(images)))
    check("classification extension: top-3 'score:index:label' strings, best first", ok, top)
    status, _, v1 = http.json("POST", f"/v2/models/{MODEL}/versions/1/infer", infer_request(images))
    v1_probs = v1["outputs"][0]["data"] if status == 200 else []
    check("versions/1/infer serves version 1 (a different epoch's weights)",
          status == 200 and v1["model_version"] == "1" and any(abs(a - b) > 1e-6 for a, b in zip(v1_probs, probs["data"])), v1)
    status, _, pinned = http.json("POST", "/predict", {"model_id": MODEL, "version": 1, "examples": [
        [[img[y * 28:(y + 1) * 28] for y in range(28)]] for img in images]})
    same = status == 200 and all(abs(a - b) < 1e-5 for a, b in zip([p for row in pinned["probabilities"] for p in row], v1_probs))
    check('/predict with "version": 1 answers exactly as versions/1/infer', same and pinned["version"] == 1, pinned)
    return probs["data"], idx["data"]


def check_binary(http, images, want_probs, want_idx):
    path = f"/v2/models/{MODEL}/infer"
    raw = struct.pack("<%df" % (784 * len(images)), *[v for img in images for v in img])
    header = json.dumps({"inputs": [{"name": "input", "shape": [len(images), 1, 28, 28], "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "parameters": {"binary_data_output": True}}).encode()
    status, headers, body = http.call("POST", path, header + raw, {
        "Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))})
    ok = status == 200 and "inference-header-content-length" in headers
    if ok:
        n = int(headers["inference-header-content-length"])
        reply, rest = json.loads(body[:n]), body[n:]
        sizes = [o["parameters"]["binary_data_size"] for o in reply["outputs"]]
        probs = struct.unpack("<%df" % (sizes[0] // 4), rest[:sizes[0]])
        idx = struct.unpack("<%dq" % (sizes[1] // 8), rest[sizes[0]:sizes[0] + sizes[1]])
        ok = ("data" not in reply["outputs"][0] and len(rest) == sum(sizes) and list(idx) == want_idx
              and all(abs(a - b) < 1e-5 for a, b in zip(probs, want_probs)))
    check("binary tensor data: FP32 input bytes in, binary outputs back (same answer as JSON)", ok,
          f"{status} {headers.get('inference-header-content-length')}")
    mixed = json.dumps({"inputs": [{"name": "input", "shape": [len(images), 1, 28, 28], "datatype": "FP32",
                                    "parameters": {"binary_data_size": len(raw)}}],
                        "outputs": [{"name": "class_idx", "parameters": {"binary_data": False}}]}).encode()
    status, headers, body = http.call("POST", path, mixed + raw, {
        "Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(mixed))})
    reply = json.loads(body) if status == 200 else {}
    check("binary input with a JSON output", status == 200 and reply["outputs"][0]["data"] == want_idx, body[:200])


def check_errors(http, images):
    path = f"/v2/models/{MODEL}/infer"
    one = infer_request(images[:1])
    cases = [
        ("wrong shape", dict(one, inputs=[dict(one["inputs"][0], shape=[1, 3, 28, 28])]), 400),
        ("unsupported datatype FP64", dict(one, inputs=[dict(one["inputs"][0], datatype="FP64")]), 400),
        ("data shorter than the shape", dict(one, inputs=[dict(one["inputs"][0], data=one["inputs"][0]["data"][:-1])]), 400),
        ("FP32 outside 0..1", dict(one, inputs=[dict(one["inputs"][0], data=[2.0] * 784)]), 400),
        ("no inputs", {"outputs": []}, 400),
        ("two inputs", dict(one, inputs=one["inputs"] * 2), 400),
        ("unknown output", dict(one, outputs=[{"name": "logits"}]), 400),
        ("bad classification", dict(one, outputs=[{"name": "probabilities", "parameters": {"classification": 0}}]), 400),
    ]
    for name, body, want in cases:
        status, _, reply = http.json("POST", path, body)
        check(f"infer error, {name}: {want} with {{\"error\": message}}", status == want and is_error_body(reply), f"{status} {reply}")
    for name, raw, headers, want in (
            ("not JSON", b"{nope", {"Content-Type": "application/json"}, 400),
            ("Inference-Header-Content-Length past the body", b"{}", {"Inference-Header-Content-Length": "99"}, 400),
            ("binary_data_size larger than what follows", json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 28, 28],
             "datatype": "FP32", "parameters": {"binary_data_size": 3136}}]}).encode() + b"\0" * 10, None, 400)):
        if headers is None:
            headers = {"Inference-Header-Content-Length": str(len(raw) - 10)}
        status, _, body = http.call("POST", path, raw, headers)
        reply = json.loads(body) if body.startswith(b"{") else None
        check(f"infer error, {name}: {want} with {{\"error\": message}}", status == want and is_error_body(reply), f"{status} {body[:120]!r}")
    for method, p, want in (("POST", "/v2/models/no-such-model/infer", 404), ("GET", "/v2/models/no-such-model", 404),
                            ("GET", f"/v2/models/{MODEL}/versions/99", 404), ("GET", f"/v2/models/{MODEL}/versions/abc", 400),
                            ("GET", f"/v2/models/{MODEL}/infer", 405), ("GET", "/v2/models/..%2Fescape", 404), ("GET", "/v2/models/bad%20id", 400)):
        status, _, reply = http.json(method, p, one if method == "POST" else None)
        check(f"{method} {p}: {want} with {{\"error\": message}}", status == want and is_error_body(reply), f"{status} {reply}")
    status, _, reply = http.json("POST", path, one, token=None)
    check("infer without the API token: 401 with {\"error\": message}", status == 401 and is_error_body(reply), f"{status} {reply}")
    status, _, reply = http.json("GET", f"/v2/models/{MODEL}", token="wrong")
    check("metadata with a wrong token: 403", status == 403 and is_error_body(reply), f"{status} {reply}")


def check_example_client(args, url, home):
    png = os.path.join(home, "trouser.png")
    with open(png, "wb") as f:
        f.write(png_28x28())
    env = dict(os.environ, MLSWARM_TOKEN_FILE=os.path.join(home, "api_token"))
    for extra in ([], ["--binary"], ["--version", "1"]):
        run = subprocess.run([sys.executable, args.example, "--url", url, "--model", MODEL, *extra, png],
                             capture_output=True, text=True, env=env, timeout=60)
        want_version = "version 1" if "--version" in extra else "version 2"
        check(f"examples/kserve_client.py {' '.join(extra) or '(JSON)'} classifies a PNG",
              run.returncode == 0 and "trouser.png: " in run.stdout and want_version in run.stdout,
              run.stdout + run.stderr)
        print("    " + run.stdout.strip())


def main():
    parser = argparse.ArgumentParser()
    for name in ("--controller", "--trainer", "--data-dir", "--example"):
        parser.add_argument(name, required=True)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="mlswarm-kserve-")
    with open(os.path.join(home, "api_token"), "w") as f:
        f.write(TOKEN + "\n")
    train_port, port = free_port("127.0.0.2"), free_port("127.0.0.1")
    logs = [open(os.path.join(home, n), "wb") for n in ("trainer.log", "controller.log")]
    procs = [subprocess.Popen([args.trainer, "--host", "127.0.0.2", "--port", str(train_port), "--home-dir", home,
                               "--data-dir", args.data_dir, "--threads", "1"], stdout=logs[0], stderr=subprocess.STDOUT),
             subprocess.Popen([args.controller, "--host", "127.0.0.1", "--port", str(port), "--subnet", "127.0.0.0/30",
                               "--train-port", str(train_port), "--home-dir", home, "--data-dir", args.data_dir,
                               "--scan-interval-ms", "300", "--api-token-file", os.path.join(home, "api_token")],
                              stdout=logs[1], stderr=subprocess.STDOUT)]
    url = f"http://127.0.0.1:{port}"
    http = Http(url)
    try:
        poll("a trainer", lambda: len(http.json("GET", "/status")[2]["trainers"]) == 1, 60)
        status, _, job = http.json("POST", "/train", {"model_id": MODEL, "example_idxs": [0, 1500],
                                                      "train_opts": {"epochs": 2, "batch_size": 64}})
        poll("the job", lambda: http.json("GET", f"/jobs/{job['job_id']}")[2]["state"] == "succeeded", 300)
        status, _, page = http.json("GET", "/datasets/fashion-mnist/examples?split=test&count=8")
        images = [[v for row in ex[0] for v in row] for ex in page["examples"]]
        check_health_and_metadata(http)
        probs, idx = check_json_infer(http, images, page["labels"])
        check_binary(http, images, probs, idx)
        check_errors(http, images)
        check_example_client(args, url, home)
    except Exception as e:  # report, then the logs
        check("the test ran to the end", False, f"{type(e).__name__}: {e}")
        for name in ("controller.log", "trainer.log"):
            with open(os.path.join(home, name), errors="replace") as f:
                print(f"--- {name} ---\n" + "".join(f.readlines()[-30:]))
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(home, ignore_errors=True)
    failed = [n for n, ok in results if not ok]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
