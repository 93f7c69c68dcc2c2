#!/usr/bin/env python3
"""A real SMTP server (aiosmtpd) that stores every accepted message as one .eml file.

Usage:
  smtp_sink.py --host 127.0.0.1 --port 2525 --maildir DIR
               [--reply-code CODE] [--reject-rcpt SUBSTRING ...] [--stall WHEN]

Each accepted message is written atomically as DIR/<timestamp_ns>-<uuid>.eml
(written to a dot-prefixed temp file in DIR, then renamed), so a reader that lists
*.eml never sees a partial file, and sorting by name gives arrival order. Two
envelope headers are prepended: X-Envelope-From and X-Envelope-To (comma-separated).

Simulated refusals:
  --reply-code 535   AUTH (any credentials) and MAIL FROM are answered
                     "535 5.7.8 Authentication credentials invalid".
  --reply-code CODE  any other code (e.g. 421, 451, 452, 550, 554): every RCPT TO is
                     answered with CODE and a matching message; nothing is stored.
  --reject-rcpt S    (repeatable) RCPT TO addresses containing S (case-insensitive)
                     get "550 5.1.1 Mailbox unavailable"; others are accepted.

Simulated stalls (a server that takes connections, then never answers):
  --stall greeting   accepts the TCP connection and never sends the 220 greeting.
  --stall data       answers normally up to the end of DATA, then never replies to it
                     (the message is not stored).

Without --reply-code, AUTH PLAIN/LOGIN is advertised (also without TLS) and any
credentials are accepted, so clients configured with a username/password work.
Runs in the foreground until SIGTERM/SIGINT; prints one "listening" line when ready.
"""

import argparse
import asyncio
import os
import signal
import sys
import time
import uuid
import warnings

from aiosmtpd.smtp import SMTP, AuthResult

DEFAULT_TEXT = {
    421: "4.3.2 Service not available (simulated)",
    450: "4.2.1 Mailbox temporarily unavailable (simulated)",
    451: "4.3.0 Temporary local problem, try again later (simulated)",
    452: "4.3.1 Insufficient system storage (simulated)",
    535: "5.7.8 Authentication credentials invalid",
    550: "5.1.1 Mailbox unavailable (simulated)",
    552: "5.3.4 Message size exceeds limit (simulated)",
    553: "5.1.3 Mailbox name not allowed (simulated)",
    554: "5.7.1 Transaction failed (simulated)",
}


def reply(code: int) -> str:
    text = DEFAULT_TEXT.get(code) or f"{code // 100}.0.0 Simulated reply {code}"
    return f"{code} {text}"


class SinkHandler:
    def __init__(self, maildir, reply_code, reject_rcpt, stall=None):
        self.maildir = maildir
        self.stall = stall
        self.reply_code = reply_code
        self.reject_rcpt = [p.lower() for p in reject_rcpt]

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.reply_code == 535:
            return reply(535)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.reply_code is not None and self.reply_code != 535:
            return reply(self.reply_code)
        low = address.lower()
        if any(p in low for p in self.reject_rcpt):
            return "550 5.1.1 Mailbox unavailable: " + address
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.stall == "data":
            await asyncio.Event().wait()  # never set: the client waits until its own timeout
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        head = (
            f"X-Envelope-From: {envelope.mail_from}\r\n"
            f"X-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n"
        ).encode("utf-8", "replace")
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex}.eml"
        tmp = os.path.join(self.maildir, f".{name}.tmp")
        with open(tmp, "wb") as f:
            f.write(head + content)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, os.path.join(self.maildir, name))
        return "250 2.0.0 Message accepted for delivery"


def main():
    ap = argparse.ArgumentParser(description="aiosmtpd sink storing .eml files")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=2525)
    ap.add_argument("--maildir", required=True)
    ap.add_argument("--reply-code", type=int, default=None)
    ap.add_argument("--reject-rcpt", action="append", default=[])
    ap.add_argument("--stall", choices=["greeting", "data"], default=None)
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message=".*login_data is deprecated.*")

    os.makedirs(args.maildir, exist_ok=True)
    handler = SinkHandler(
        os.path.abspath(args.maildir), args.reply_code, args.reject_rcpt, args.stall
    )

    def authenticator(server, session, envelope, mechanism, auth_data):
        if args.reply_code == 535:
            return AuthResult(success=False, handled=False, message=reply(535))
        return AuthResult(success=True, auth_data=auth_data)

    def factory():
        if args.stall == "greeting":
            return asyncio.Protocol()  # holds the connection open and says nothing
        return SMTP(
            handler,
            hostname="smtp-sink.localhost",  # avoid socket.getfqdn(): it may hang without DNS
            ident="vidmp3 smtp sink",
            decode_data=False,
            enable_SMTPUTF8=True,
            authenticator=authenticator,
            auth_require_tls=False,
        )

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(
        loop.create_server(factory, host=args.host, port=args.port, reuse_address=True)
    )
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    print(f"smtp sink listening on {args.host}:{args.port}, maildir {handler.maildir}", flush=True)
    try:
        loop.run_until_complete(stop)
    finally:
        server.close()
        try:  # Python >= 3.12 waits for open connections here: bound it
            loop.run_until_complete(asyncio.wait_for(server.wait_closed(), 1.0))
        except (asyncio.TimeoutError, Exception):
            pass
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
