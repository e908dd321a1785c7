"""The demo's web app: counts its visits in Redis. Standard library only."""

import os
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REDIS = (os.environ.get("REDIS_HOST", "redis"), 6379)


def incr(key: bytes) -> int:
    """INCR key, spoken in Redis's own protocol (RESP)."""
    with socket.create_connection(REDIS, timeout=2) as conn:
        conn.sendall(b"*2\r\n$4\r\nINCR\r\n$%d\r\n%s\r\n" % (len(key), key))
        reply = conn.makefile("rb").readline()
    if not reply.startswith(b":"):
        raise RuntimeError(f"redis answered {reply!r}")
    return int(reply[1:])


class Page(BaseHTTPRequestHandler):
    def do_GET(self):
        try:
            body = f"Hello from the sandpit compose demo! Visits: {incr(b'visits')}\n"
            status = 200
        except (OSError, RuntimeError) as e:
            body, status = f"cannot reach redis: {e}\n", 503
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


if __name__ == "__main__":
    print("app listening on :5000", flush=True)
    ThreadingHTTPServer(("", 5000), Page).serve_forever()
