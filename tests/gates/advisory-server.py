"""An offline advisory source for the dependency-scan gates (tests only).

Serves, from fixture files beside it:
- npm's bulk advisory endpoint (`POST /-/npm/v1/security/advisories/bulk`) from
  advisories.json, for `npm audit`: the test points the gate at it with
  `pipeforge run --env NPM_CONFIG_REGISTRY=http://127.0.0.1:PORT/`;
- the OSV query API (`POST /v1/query`) from osv-advisories.json, for pip-audit: the test sets
  `PF_OSV_API_URL=http://127.0.0.1:PORT/v1/query`. An advisory matches when the query's
  package and ecosystem are in its `affected` list and the version is one of its `versions`.

So the security-scan gates' wiring is tested without the internet. Prints the port on its
first line; exits when stdin closes (the test process ended).
"""
import json
import pathlib
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = pathlib.Path(__file__).parent
NPM = json.loads((HERE / "advisories.json").read_text())
OSV = json.loads((HERE / "osv-advisories.json").read_text())


def osv_query(query):
    pkg = query.get("package", {})
    found = [
        v
        for v in OSV
        if any(
            a["package"]["name"] == pkg.get("name")
            and a["package"]["ecosystem"] == pkg.get("ecosystem")
            and query.get("version") in a.get("versions", [])
            for a in v["affected"]
        )
    ]
    return {"vulns": found} if found else {}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path.startswith("/-/npm/v1/security/advisories/bulk"):
            answer = NPM
        elif self.path == "/v1/query":
            answer = osv_query(json.loads(body or b"{}"))
        else:
            self.send_response(404)
            self.end_headers()
            return
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
print(server.server_address[1], flush=True)
sys.stdin.read()
server.shutdown()
