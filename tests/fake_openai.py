"""A fake OpenAI-compatible chat-completions server on loopback, answering from a script."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeOpenAI:
    """`answers` is a list of (status, content-or-body[, headers]); the last one repeats when the list runs out.

    Each request is kept with its arrival time (`at`, time.monotonic()), so tests can measure the
    gaps the client left between requests on the server's side.
    """

    def __init__(self, answers):
        self.answers = list(answers)
        self.requests = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                at = time.monotonic()
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization"),
                                          "at": at})
                    answer = fake.answers.pop(0) if len(fake.answers) > 1 else fake.answers[0]
                status, content, headers = answer if len(answer) == 3 else (*answer, {})
                if status == 200 and isinstance(content, str):
                    payload = {"choices": [{"message": {"role": "assistant", "content": content}}],
                               "usage": {"prompt_tokens": 11, "completion_tokens": 7}}
                else:
                    payload = content if isinstance(content, dict) else {"error": {"message": str(content)}}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
