"""A webhook receiver for the tests, as a real process: `python tests/receiver.py PORT LOG [--fail N] [--hang N]`.

Each request is appended to LOG as one JSON line (headers, body, and what it answered) as soon as it
is read. The first --hang N requests get no answer at all (the connection is held open); the next
--fail N get a 500; the rest a 200. It listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

counter = threading.Lock()
seen = 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("log")
    parser.add_argument("--fail", type=int, default=0)
    parser.add_argument("--hang", type=int, default=0)
    options = parser.parse_args()

    class Receive(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
            global seen
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with counter:
                seen += 1
                number = seen
            hang = number <= options.hang
            status = None if hang else 500 if number <= options.hang + options.fail else 200
            entry = {"headers": dict(self.headers), "body": body.decode(), "answer": status}
            with open(options.log, "a") as log:
                log.write(json.dumps(entry) + "\n")
            if hang:
                time.sleep(3600)
                return
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", options.port), Receive)
    server.daemon_threads = True
    print("listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
