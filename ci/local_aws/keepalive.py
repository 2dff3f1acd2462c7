"""HTTP/1.1 keep-alive for the local server, and moto's per-request dispatch made cheaper.

Werkzeug's development server, which moto's server uses, answers every request with
`Connection: close`: each request costs the client a new TCP connection and the server an
accept, a new thread and a socket teardown, and after each response it waits up to 10 ms for
stray request bytes. With moto's dispatch, which lists moto's package directory on disk on
every request to find the service, that was most of the server's CPU for a GET of a small
object (3.3 ms; 1.1 ms with this module).

`Handler` keeps the connection open instead (as S3 does) and changes nothing else that a
client can see: the same WSGI app under the same lock, the same environ (moto's handler builds
it, underscored S3 metadata headers included), the same status, headers and body, a request log
line per request. Its framing:

- the request body is read through a stream bounded by its Content-Length (or de-chunked), and
  whatever the app left unread is drained before the next request is parsed, so an unread body
  can never be taken for the next request line;
- the response is buffered (moto's responses are in memory anyway) and sent in one write with
  its Content-Length, so it never needs chunked encoding;
- the connection is closed as before when the client asks for it (`Connection: close`,
  HTTP/1.0), when the app fails (a 500, as werkzeug answers), or when the request body could not
  be drained.

`install()` replaces moto's `list_of_moto_modules()` with the same list computed once (the
package directory does not change while the server runs).
"""

import traceback

from werkzeug.exceptions import InternalServerError
from werkzeug.wsgi import LimitedStream

# Statuses whose responses carry no body, hence no Content-Length of ours (nor do HEAD's).
NO_BODY_STATUSES = {204, 304}


def install() -> None:
    """Moto's dispatch: the list of service modules computed once, not per request."""
    from moto import backends

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: iter(modules)


def handler(base):
    """A request handler class on `base` (moto's `MotoRequestHandler`) with keep-alive."""

    class Handler(base):
        # A response goes out in one write; without this, Nagle's algorithm could hold it.
        disable_nagle_algorithm = True

        def make_environ(self):
            environ = super().make_environ()
            if not environ.get("wsgi.input_terminated"):
                # Bounded, so that neither the app nor the drain reads into the next request.
                length = _content_length(environ)
                if length is None:
                    self.close_connection = True
                    length = 0
                environ["wsgi.input"] = LimitedStream(self.rfile, length)
            # Moto may swap in a copy of the body it read: the drain reads this stream.
            self.body_stream = environ["wsgi.input"]
            return environ

        def run_wsgi(self) -> None:
            # Expect: 100-continue was answered by http.server's parse_request.
            self.environ = environ = self.make_environ()
            try:
                status, headers, body = _call(self.server.app, environ)
            except Exception as error:  # the app failed: a 500, as werkzeug answers
                self.close_connection = True
                trace = "".join(traceback.format_exception(error))
                self.server.log("error", f"Error on request:\n{trace}")
                status, headers, body = _call(InternalServerError(), environ)
            if not _drain(self.body_stream):
                self.close_connection = True
            self._respond(environ, status, headers, body)

        def _respond(self, environ, status, headers, body: bytes) -> None:
            code, _, message = status.partition(" ")
            code = int(code)
            self.send_response(code, message)  # also logs the request, as before
            names = set()
            for name, value in headers:
                if name.lower() == "connection" and value.lower() == "close":
                    continue  # decided below
                self.send_header(name, value)
                names.add(name.lower())
            has_body = environ["REQUEST_METHOD"] != "HEAD" and code >= 200 and code not in NO_BODY_STATUSES
            if "content-length" not in names and has_body:
                self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            else:
                self.send_header("Connection", "keep-alive")
            # Headers and body in one write (http.server buffers the headers until flushed).
            self._headers_buffer.append(b"\r\n")
            if body and has_body:
                self._headers_buffer.append(body)
            self.flush_headers()

    Handler.__name__ = Handler.__qualname__ = "KeepAliveRequestHandler"
    return Handler


def _content_length(environ):
    """The request's Content-Length, 0 when absent; None when it is not a number."""
    value = environ.get("CONTENT_LENGTH", "").strip()
    if not value:
        return 0
    try:
        length = int(value)
    except ValueError:
        return None
    return length if length >= 0 else None


def _call(app, environ):
    """Calls the WSGI app; its status, headers and whole body."""
    started = {}

    def start_response(status, headers, exc_info=None):
        if exc_info is None and started:
            raise AssertionError("Headers already set")
        started["status"], started["headers"] = status, headers
        return chunks.append

    chunks = []
    result = app(environ, start_response)
    try:
        for chunk in result:
            if not isinstance(chunk, bytes):
                raise TypeError("applications must write bytes")
            chunks.append(chunk)
    finally:
        if hasattr(result, "close"):
            result.close()
    if not started:
        raise AssertionError("the app returned without calling start_response")
    return started["status"], started["headers"], b"".join(chunks)


def _drain(stream) -> bool:
    """Reads what the app left of the request body; False when that failed."""
    try:
        while stream.read(1 << 16):
            pass
    except Exception:  # a client that sent less than announced, a broken chunk
        return False
    return True
