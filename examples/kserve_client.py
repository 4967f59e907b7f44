#!/usr/bin/env python3
"""Classify images with an mlswarm controller over the Open Inference Protocol (KServe v2).

Python's standard library only: the PNG is decoded here, the request is JSON or, with
--binary, the binary tensor data extension (a JSON header, then raw little-endian bytes).

  examples/kserve_client.py --url http://127.0.0.1:48515 --model fmnist-a shoe.png
  examples/kserve_client.py --model fmnist-a --version 3 --binary --top 3 a.png b.png
  MLSWARM_TOKEN_FILE=~/.mlswarm/api_token examples/kserve_client.py --model fmnist-a shoe.png

Prints one line per image: the file, the top classes with their scores, the model version.
Exit status 0 on success, 1 when the server refused (its {"error": ...} message is printed).
"""
import argparse
import json
import os
import struct
import sys
import urllib.error
import urllib.request
import zlib


def decode_png(data):
    """8-bit grayscale, RGB or RGBA PNG (not interlaced) -> (channels, height, width, bytes)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color, _, _, interlace = header
    channels = {0: 1, 2: 3, 6: 4}.get(color)
    if depth != 8 or channels is None or interlace:
        raise ValueError("only 8-bit, non-interlaced grayscale, RGB or RGBA PNGs are supported")
    raw, stride, out, prev = zlib.decompress(idat), width * channels, bytearray(), bytearray(width * channels)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out += line
        prev = line
    return channels, height, width, bytes(out)


def to_model_input(png, want_c, want_h, want_w):
    """NCHW bytes for the model: channels converted (RGB -> gray by mean), nearest-neighbour resize."""
    c, h, w, pixels = png
    planes = []
    for k in range(want_c):
        plane = bytearray(want_h * want_w)
        for y in range(want_h):
            for x in range(want_w):
                at = ((y * h // want_h) * w + (x * w // want_w)) * c
                if want_c == 1:
                    value = sum(pixels[at:at + min(c, 3)]) // min(c, 3)
                else:
                    value = pixels[at + min(k, c - 1)]
                plane[y * want_w + x] = value
        planes.append(bytes(plane))
    return b"".join(planes)


class Server:
    def __init__(self, url, token):
        self.url, self.token = url.rstrip("/"), token

    def call(self, method, path, body=None, headers=None):
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=dict(headers or {}))
        if self.token:
            request.add_header("Authorization", "Bearer " + self.token)
        try:
            with urllib.request.urlopen(request, timeout=60) as reply:
                return reply.status, dict(reply.headers), reply.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()


def infer(server, path, pixels, shape, binary, top):
    outputs = [{"name": "probabilities", "parameters": {"classification": top, "binary_data": binary}},
               {"name": "class_idx", "parameters": {"binary_data": binary}}]
    if binary:  # UINT8 pixels as raw bytes after the JSON header
        header = json.dumps({"inputs": [{"name": "input", "shape": shape, "datatype": "UINT8",
                                         "parameters": {"binary_data_size": len(pixels)}}],
                             "outputs": outputs}).encode()
        status, headers, body = server.call("POST", path, header + pixels, {
            "Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))})
    else:
        request = {"inputs": [{"name": "input", "shape": shape, "datatype": "UINT8", "data": list(pixels)}],
                   "outputs": outputs}
        status, headers, body = server.call("POST", path, json.dumps(request).encode(),
                                            {"Content-Type": "application/json"})
    length = {k.lower(): v for k, v in headers.items()}.get("inference-header-content-length")
    reply = json.loads(body[:int(length)] if length else body)
    if status != 200:
        raise RuntimeError(f"HTTP {status}: {reply.get('error')}")
    rest, tensors = body[int(length):] if length else b"", {}
    for out in reply["outputs"]:  # binary outputs follow the header in the outputs' order
        size = out.get("parameters", {}).get("binary_data_size")
        if size is None:
            tensors[out["name"]] = out["data"]
            continue
        chunk, rest = rest[:size], rest[size:]
        if out["datatype"] == "BYTES":
            values = []
            while chunk:
                (n,) = struct.unpack("<I", chunk[:4])
                values.append(chunk[4:4 + n].decode())
                chunk = chunk[4 + n:]
            tensors[out["name"]] = values
        else:
            tensors[out["name"]] = list(struct.unpack("<%dq" % (len(chunk) // 8), chunk))
    return reply, tensors


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("MLSWARM_URL", "http://localhost:48515"))
    parser.add_argument("--model", required=True)
    parser.add_argument("--version", type=int, help="a pinned version (epoch); default: the latest")
    parser.add_argument("--binary", action="store_true", help="binary tensor data instead of JSON")
    parser.add_argument("--top", type=int, default=3)
    parser.add_argument("images", nargs="+")
    args = parser.parse_args()
    token_file = os.environ.get("MLSWARM_TOKEN_FILE")
    server = Server(args.url, open(token_file).read().strip() if token_file else "")
    base = f"/v2/models/{args.model}" + (f"/versions/{args.version}" if args.version else "")
    status, _, body = server.call("GET", base)
    meta = json.loads(body)
    if status != 200:
        print(f"error: HTTP {status}: {meta.get('error')}", file=sys.stderr)
        return 1
    _, c, h, w = meta["inputs"][0]["shape"]
    try:
        for path in args.images:
            with open(path, "rb") as f:
                pixels = to_model_input(decode_png(f.read()), c, h, w)
            reply, tensors = infer(server, base + "/infer", pixels, [1, c, h, w], args.binary, args.top)
            top = ", ".join(f"{label} {float(score):.3f}" for score, _, label in
                            (s.split(":", 2) for s in tensors["probabilities"]))
            print(f"{path}: {top} (class_idx {tensors['class_idx'][0]}, model {reply['model_name']} "
                  f"version {reply['model_version']}{', binary' if args.binary else ''})")
    except (RuntimeError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
