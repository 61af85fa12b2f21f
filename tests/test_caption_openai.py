"""The openai backend against a real HTTP server on loopback that records requests."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from fastsam2.prompts.caption import QUESTIONS, CaptionError
from fastsam2.prompts.captioners import make_captioner
from fastsam2.prompts.caption_openai import OpenAICaptioner, completions_url, parse_retry_after
from helpers import noise_frame


class _Server:
    def __init__(self):
        self.requests: list[dict] = []
        self.paths: list[str] = []
        self.fail_next: list[int] = []  # status codes to answer before succeeding
        self.retry_after: str | None = None  # Retry-After header sent with those failures
        self.times: list[float] = []  # when each request arrived (time.monotonic)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.paths.append(self.path)
                outer.requests.append(body)
                outer.times.append(time.monotonic())
                if outer.fail_next:
                    self.send_response(outer.fail_next.pop(0))
                    if outer.retry_after is not None:
                        self.send_header("Retry-After", outer.retry_after)
                    self.end_headers()
                    self.wfile.write(b"nope")
                    return
                n = len(outer.requests)
                reply = {"choices": [{"message": {"role": "assistant", "content": f" A surfer on a wave {n}. "}}]}
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.httpd.shutdown()


def test_completions_url():
    assert completions_url("http://h:8000") == "http://h:8000/v1/chat/completions"
    assert completions_url("http://h:8000/v1/") == "http://h:8000/v1/chat/completions"
    assert completions_url("http://h/v1/chat/completions") == "http://h/v1/chat/completions"


def test_requests_have_the_chat_shape_and_captions_come_back(server):
    cap = make_captioner("openai", model="llava-hf/llava-1.5-7b-hf", endpoint=server.url, max_new_tokens=20)
    assert isinstance(cap, OpenAICaptioner) and cap.backend == "openai"
    caps = cap.caption([noise_frame(), noise_frame()], [(10, 10, 50, 40), (20, 5, 90, 55)])
    assert sorted(caps) == ["A surfer on a wave 1.", "A surfer on a wave 2."]
    assert server.paths == ["/v1/chat/completions"] * 2
    body = server.requests[0]
    assert body["model"] == "llava-hf/llava-1.5-7b-hf"
    assert body["temperature"] == 0.0 and body["max_tokens"] == 20
    (msg,) = body["messages"]
    image_part, text_part = msg["content"]
    assert msg["role"] == "user" and text_part == {"type": "text", "text": QUESTIONS["crop"]}
    url = image_part["image_url"]["url"]
    img = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert img.format == "JPEG" and img.size[0] == img.size[1]


def test_server_errors_are_retried_client_errors_are_not(server):
    cap = OpenAICaptioner(server.url, "m", retries=1)
    server.fail_next = [503]
    assert cap.caption([noise_frame()], [None]) == ["A surfer on a wave 2."]
    server.fail_next = [400]
    with pytest.raises(CaptionError, match="HTTP 400"):
        cap.caption([noise_frame()], [None])


def test_unreachable_endpoint_is_named():
    cap = OpenAICaptioner("http://127.0.0.1:9/v1", "m", retries=0, timeout_s=2)
    with pytest.raises(CaptionError, match="unreachable"):
        cap.caption([noise_frame()], [None])


def test_429_waits_as_long_as_retry_after_says(server):
    cap = OpenAICaptioner(server.url, "m", retries=3, max_wait_s=10)
    server.fail_next, server.retry_after = [429, 429], "0.6"
    assert cap.caption([noise_frame()], [None]) == ["A surfer on a wave 3."]
    gaps = [b - a for a, b in zip(server.times, server.times[1:])]
    assert len(gaps) == 2 and all(0.55 <= g < 3.0 for g in gaps), gaps  # Retry-After, not the 0.5 s backoff


def test_retries_stop_at_the_wait_budget_and_name_the_cause(server):
    cap = OpenAICaptioner(server.url, "m", retries=10, max_wait_s=1.0)
    server.fail_next, server.retry_after = [503] * 10, "0.4"
    t0 = time.monotonic()
    with pytest.raises(CaptionError, match=r"HTTP 503.*1s retry budget"):
        cap.caption([noise_frame()], [None])
    assert time.monotonic() - t0 < 3.0
    assert len(server.requests) == 3  # waits 0.4 + 0.4; a third wait would pass 1.0 s


def test_retry_after_accepts_seconds_and_http_dates():
    import email.utils

    assert parse_retry_after("7") == 7.0 and parse_retry_after(None) is None and parse_retry_after("soon") is None
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= parse_retry_after(future) <= 31
