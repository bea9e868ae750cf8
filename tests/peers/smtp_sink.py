"""A real SMTP server for the email tests: aiosmtpd on 127.0.0.1, writing each message it
accepts to a folder.

    python smtp_sink.py --port PORT --dir DIR [--cert CERT --key KEY] [--auth USER:PASSWORD]
                        [--drop-in-data N] [--delay-data SECONDS]

Each accepted message becomes DIR/<n>.eml (the bytes received, after DATA) and DIR/<n>.json
(the envelope: mail_from, rcpt_tos). With --cert/--key the server offers STARTTLS and requires
it before MAIL; with --auth it requires AUTH (PLAIN or LOGIN) with that user and password.

With --drop-in-data N, the first N messages are not accepted: once the whole message has
arrived after DATA, the server aborts the TCP connection without answering (no 250, no 4xx or
5xx), so the client cannot know whether the message was delivered. Each such message is kept
as DIR/dropped-<k>.eml and DIR/dropped-<k>.json instead, so a test can count the attempts.

With --delay-data SECONDS, the server waits that long after the whole message has arrived
before it answers (without blocking its event loop), then goes on as above: a slow server in
the middle of DATA, for tests of what happens to a send while it waits. A client that closes
the connection during the wait abandons the message (aiosmtpd then cancels the handler, so it
is never answered nor accepted); it is kept as DIR/abandoned-<k>.eml and .json instead.

Prints "READY <port>" once it accepts connections, and runs until killed.
"""

import argparse
import asyncio
import json
import os
import signal
import ssl
import sys
import threading
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def keep(base, envelope):
    """Writes the envelope to BASE.json, then the message to BASE.eml."""
    # The envelope first and the message last, renamed into place, so a reader that sees
    # BASE.eml also sees BASE.json.
    with open(base + ".json", "w") as f:
        json.dump({"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos}, f)
    with open(base + ".eml.tmp", "wb") as f:
        f.write(envelope.original_content or envelope.content)
    os.rename(base + ".eml.tmp", base + ".eml")


class Sink:
    """Writes every message to the folder, numbered in arrival order, each after waiting
    `delay_data` seconds (apart, if the client leaves meanwhile); drops the first
    `drop_in_data` connections in the middle of DATA instead."""

    def __init__(self, folder, drop_in_data=0, delay_data=0.0):
        self.folder = folder
        self.drop_in_data = drop_in_data
        self.delay_data = delay_data
        self.count = 0
        self.dropped = 0
        self.abandoned = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        if self.delay_data > 0:
            try:
                await asyncio.sleep(self.delay_data)
            except asyncio.CancelledError:
                # aiosmtpd cancels the handler when the client goes: the message is kept
                # apart, so a test can tell a send cut off mid-DATA, and the handler ends.
                with self.lock:
                    self.abandoned += 1
                    n = self.abandoned
                keep(os.path.join(self.folder, f"abandoned-{n}"), envelope)
                raise
        with self.lock:
            drop = self.dropped < self.drop_in_data
            if drop:
                self.dropped += 1
                n = self.dropped
            else:
                self.count += 1
                n = self.count
        if drop:
            keep(os.path.join(self.folder, f"dropped-{n}"), envelope)
            # The DATA transaction is left open: the client sent the whole message and waits
            # for the answer, and the connection is gone instead. aiosmtpd's own write of
            # the status below goes nowhere once the transport is aborted.
            server.transport.abort()
            return "451 never sent: the connection was aborted"
        keep(os.path.join(self.folder, str(n)), envelope)
        return "250 Message accepted for delivery"


def authenticator_for(user, password):
    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        return AuthResult(success=ok)

    return authenticate


def main():
    # aiosmtpd 1.4 warns about its own deprecated Session.login_data when AUTH succeeds.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--auth")
    parser.add_argument("--drop-in-data", type=int, default=0, metavar="N")
    parser.add_argument("--delay-data", type=float, default=0.0, metavar="SECONDS")
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)

    kwargs = {}
    if args.cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
        kwargs["tls_context"] = context
        kwargs["require_starttls"] = True
    if args.auth:
        user, password = args.auth.split(":", 1)
        kwargs["authenticator"] = authenticator_for(user, password)
        kwargs["auth_required"] = True
        # Only with STARTTLS does the password travel encrypted; plain AUTH is for loopback
        # tests without a certificate.
        kwargs["auth_require_tls"] = bool(args.cert)

    controller = Controller(Sink(args.dir, args.drop_in_data, args.delay_data), hostname="127.0.0.1", port=args.port, **kwargs)
    controller.start()
    print(f"READY {args.port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
