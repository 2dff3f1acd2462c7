"""An offline advisory source for `npm audit` (tests only).

Serves npm's bulk advisory endpoint (`POST /-/npm/v1/security/advisories/bulk`) from
advisories.json, so the security-scan gate's wiring is tested without the internet: the test
points the gate at it with `pipeforge run --env NPM_CONFIG_REGISTRY=http://127.0.0.1:PORT/`.
Prints the port on its first line; exits when stdin closes (the test process ended).
"""
import json
import pathlib
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ADVISORIES = json.loads((pathlib.Path(__file__).parent / "advisories.json").read_text())


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length", "0")))
        body = json.dumps(ADVISORIES).encode()
        if not self.path.startswith("/-/npm/v1/security/advisories/bulk"):
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
print(server.server_address[1], flush=True)
sys.stdin.read()
server.shutdown()
