#!/usr/bin/env python3
"""A local dead-letter sink: stores every CloudEvent POSTed to it as one JSON file.

usage: dead_letters.py --port PORT --dir DIR

Each delivery becomes DIR/<time>-<n>.json with {"headers": {...}, "body": "..."}; binary-mode CloudEvent
attributes (ce-type, ce-knativeerrordest, ce-knativeerrorcode, ...) are in "headers". Answers 202.
Stands in for the `dead-letters` ksvc of knative/dead-letters.yaml on one machine.
"""
import argparse
import json
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    counter = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server naming)
            length = min(int(self.headers.get("content-length") or 0), 1 << 20)
            body = self.rfile.read(length)
            counter[0] += 1
            name = f"{time.time_ns()}-{counter[0]}.json"
            record = {"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body.decode("utf-8", "replace")}
            tmp = os.path.join(args.dir, "." + name)
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(record, f, indent=1)
            os.replace(tmp, os.path.join(args.dir, name))
            self.send_response(202)
            self.send_header("content-length", "0")
            self.end_headers()

        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *_args) -> None:
            pass

    ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
