#!/usr/bin/env python3
"""A real SMTP server (aiosmtpd) for monserv's tests.

Modes: `starttls` (STARTTLS required before AUTH), `implicit` (TLS from the first
byte, as on port 465) and `plain` (no TLS offered: monserv must refuse it). AUTH is
required with the given user and password. Each accepted message is appended to
--out as one JSON line: envelope, login, whether TLS was on, decoded subject and body.
Prints "ready" when it accepts connections; runs until killed.
"""
import argparse
import email
import email.header
import json
import signal
import ssl
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--mode", choices=["starttls", "implicit", "plain"], required=True)
p.add_argument("--cert")
p.add_argument("--key")
p.add_argument("--user", required=True)
p.add_argument("--password", required=True)
p.add_argument("--out", required=True)
args = p.parse_args()


class Handler:
    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.original_content or envelope.content)
        subject = str(email.header.make_header(email.header.decode_header(msg["Subject"] or "")))
        body = msg.get_payload(decode=True).decode("utf-8", "replace")
        login = getattr(session.auth_data, "login", None)
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "login": login.decode() if isinstance(login, bytes) else login,
            "tls": session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None,
            "subject": subject,
            "from": msg["From"],
            "to": msg["To"],
            "content_type": msg["Content-Type"],
            "body": body,
        }
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == args.user.encode()
        and auth_data.password == args.password.encode()
    )
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


common = dict(hostname="127.0.0.1", port=args.port, authenticator=authenticator, auth_required=True)
if args.mode == "plain":
    controller = Controller(Handler(), auth_require_tls=False, **common)
else:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.cert, args.key)
    if args.mode == "starttls":
        controller = Controller(Handler(), tls_context=ctx, require_starttls=True, auth_require_tls=True, **common)
    else:
        controller = Controller(Handler(), ssl_context=ctx, auth_require_tls=False, **common)
controller.start()
print("ready", flush=True)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
signal.signal(signal.SIGINT, lambda *_: stop.set())
stop.wait()
controller.stop()
