"""What the Python tests share: free ports, polling with a deadline, a small PNG."""
import socket
import struct
import time
import zlib


def free_port(host):
    """A port the kernel just gave out on `host` (free at the time of asking)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def poll(what, predicate, seconds):
    """Calls predicate until it returns something truthy and returns that; raises after `seconds`."""
    deadline = time.monotonic() + seconds
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # a process or page mid-start: try again until the deadline
            last_error = e
        time.sleep(0.1)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}" +
                         (f" (last error: {last_error})" if last_error else ""))


def png_28x28():
    """A grayscale 28x28 PNG of a bright, trouser-like shape on black, written with zlib."""
    rows = b"".join(b"\x00" + bytes(220 if 3 <= y <= 25 and (8 <= x <= 12 or 15 <= x <= 19 or (y <= 8 and 8 <= x <= 19))
                                     else 0 for x in range(28)) for y in range(28))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 28, 28, 8, 0, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
