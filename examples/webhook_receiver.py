"""A notify_url receiver to try deliveries with: checks each one's signature and appends the task to a file.

    WEBHOOK_SECRET=whsec_... python examples/webhook_receiver.py 8000 received.jsonl

It answers 204 to a delivery whose Standard Webhooks signature checks out with WEBHOOK_SECRET (the
server's), 401 otherwise; a webhook-id seen before is answered 204 again and not stored twice, as a
receiver should do with the retries of one delivery. It listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from flask_tasks.webhooks import WebhookVerificationError, parse_secret, verify


def main() -> None:
    port, path = int(sys.argv[1]), sys.argv[2]
    secret = parse_secret(os.environ["WEBHOOK_SECRET"])
    seen: set[str] = set()

    class Receive(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                verify(secret, self.headers, body)
            except WebhookVerificationError as err:
                self.send_response(401)
                self.end_headers()
                print(f"refused: {err}", flush=True)
                return
            webhook_id = self.headers["webhook-id"]
            if webhook_id not in seen:  # a retry of a delivery already stored
                seen.add(webhook_id)
                with open(path, "a") as out:
                    out.write(json.dumps({"webhook-id": webhook_id, "task": json.loads(body)}) + "\n")
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Receive).serve_forever()


if __name__ == "__main__":
    main()
