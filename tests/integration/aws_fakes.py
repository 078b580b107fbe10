"""Small HTTP servers for the CloudWatch tests: a recording proxy in front of moto that can throttle, fail or
hang on demand, and an instance metadata service (IMDSv2) that answers, or does not.

Both run in a thread of the test process on 127.0.0.1 and a free port, over real HTTP.
"""

from __future__ import annotations

import gzip
import http.client
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

THROTTLING = (
    b'<ErrorResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/"><Error><Type>Sender</Type>'
    b"<Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>1</RequestId></ErrorResponse>"
)
UNAVAILABLE = (
    b'<ErrorResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/"><Error><Type>Receiver</Type>'
    b"<Code>ServiceUnavailable</Code><Message>Try again</Message></Error><RequestId>2</RequestId>"
    b"</ErrorResponse>"
)


@dataclass(frozen=True)
class Call:
    at: float
    action: str
    encoding: str
    size: int
    answer: int
    form: Mapping[str, list[str]]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Background:
    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = _Server(("127.0.0.1", 0), handler)
        self.server.owner = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> Any:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class AwsProxy(_Background):
    """Forwards AWS query-protocol requests to ``upstream`` (moto) and records each one (its ``Action``, its
    ``Content-Encoding``, the status answered). ``throttle(n)``/``unavailable(n)`` answer the next ``n``
    requests of ``action`` with 400 Throttling / 503; ``hang()`` holds every request unanswered until
    ``release()``."""

    def __init__(self, upstream: str) -> None:
        super().__init__(_ProxyHandler)
        split = urlsplit(upstream)
        self.upstream = (split.hostname or "127.0.0.1", split.port or 80)
        self.calls: list[Call] = []
        self.lock = threading.Lock()
        self.faults: list[tuple[str, int]] = []  # (action, status) for the next matching requests
        self.released = threading.Event()
        self.released.set()

    def throttle(self, times: int, action: str = "PutMetricData") -> None:
        with self.lock:
            self.faults.extend([(action, 400)] * times)

    def unavailable(self, times: int, action: str = "PutMetricData") -> None:
        with self.lock:
            self.faults.extend([(action, 503)] * times)

    def hang(self) -> None:
        self.released.clear()

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.release()
        super().close()

    def of(self, action: str = "PutMetricData", *, since: float = 0.0, until: float = float("inf")) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.action == action and since <= c.at < until]

    def _fault_for(self, action: str) -> int | None:
        with self.lock:
            for index, (fault_action, status) in enumerate(self.faults):
                if fault_action == action:
                    del self.faults[index]
                    return status
        return None


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        proxy: AwsProxy = self.server.owner  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        encoding = self.headers.get("Content-Encoding", "")
        plain = gzip.decompress(body) if encoding == "gzip" else body
        form = parse_qs(plain.decode("utf-8", errors="replace"))
        action = form.get("Action", [self.headers.get("X-Amz-Target", "?")])[0]
        if not proxy.released.is_set():
            proxy.released.wait(120)
            self.close_connection = True
            return
        received = time.time()
        fault = proxy._fault_for(action)
        if fault is not None:
            status, payload, headers = (
                fault,
                THROTTLING if fault == 400 else UNAVAILABLE,
                {"Content-Type": "text/xml"},
            )
        else:
            status, payload, headers = self._forward(proxy, body)
        with proxy.lock:  # recorded before the answer: a client that has its answer finds its call here
            proxy.calls.append(Call(received, action, encoding, len(body), status, form))
        self._answer(status, payload, headers)

    def _forward(self, proxy: AwsProxy, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        connection = http.client.HTTPConnection(*proxy.upstream, timeout=30)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in {"connection", "keep-alive"}}
            connection.request("POST", self.path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            keep = {"Content-Type": response.getheader("Content-Type", "text/xml")}
            return response.status, payload, keep
        finally:
            connection.close()

    def _answer(self, status: int, payload: bytes, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class FakeImds(_Background):
    """IMDSv2: ``PUT /latest/api/token`` gives a token; ``GET``s without it get 401. ``values`` maps paths
    (``/latest/meta-data/instance-id``) to answers; others are 404. ``silent=True``: accept connections, never
    answer (a metadata service a packet filter swallows).

    It also answers as an HTTP proxy would be asked (``PUT http://169.254.169.254/latest/api/token``): a client
    that cannot be pointed at another endpoint, such as OpenTelemetry's EC2 resource detector, reaches it
    through ``http_proxy``."""

    def __init__(self, values: Mapping[str, str], *, silent: bool = False) -> None:
        super().__init__(_ImdsHandler)
        self.values = dict(values)
        self.silent = silent
        self.token = secrets.token_hex(8)
        self.requests: list[tuple[str, str, bool]] = []  # (method, path, had a valid token)
        self.gate = threading.Event()

    def close(self) -> None:
        self.gate.set()
        super().close()


class _ImdsHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _owner(self) -> FakeImds:
        return self.server.owner  # type: ignore[attr-defined,no-any-return]

    def _path(self) -> str:
        # A request sent through a proxy names the whole URL: http://169.254.169.254/latest/...
        return urlsplit(self.path).path if self.path.startswith("http://") else self.path

    def do_PUT(self) -> None:
        imds = self._owner()
        path = self._path()
        imds.requests.append(("PUT", path, False))
        if imds.silent:
            imds.gate.wait(60)
            return
        if path != "/latest/api/token" or not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            self._answer(400, "")
            return
        self._answer(200, imds.token)

    def do_GET(self) -> None:
        imds = self._owner()
        path = self._path()
        valid = self.headers.get("X-aws-ec2-metadata-token") == imds.token
        imds.requests.append(("GET", path, valid))
        if imds.silent:
            imds.gate.wait(60)
            return
        if not valid:
            self._answer(401, "")
        elif path in imds.values:
            self._answer(200, imds.values[path])
        else:
            self._answer(404, "")

    def _answer(self, status: int, text: str) -> None:
        payload = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def imds_values(instance_id: str, asg_name: str | None = None, region: str = "us-east-1") -> dict[str, str]:
    values = {"/latest/meta-data/instance-id": instance_id, "/latest/meta-data/placement/region": region}
    if asg_name is not None:
        values["/latest/meta-data/tags/instance/aws:autoscaling:groupName"] = asg_name
    return values
