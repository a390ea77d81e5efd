#!/usr/bin/python3
"""Example policy program for `peerjs --auth-program` (see README, "Auth helper").

The auth helper starts this program (as its own unprivileged user) and speaks JSON lines with
it on stdin/stdout, one object per line:

  in:  {"type":"auth","rid":"17","id":…,"token":…,"key":…,"ip":…,"version":…}
  out: {"rid":"17","allow":true}  or  {"rid":"17","allow":false,"reason":"…"}
       (exactly one line per "auth", echoing its "rid" unchanged)
  in:  {"type":"connection"|"disconnect","id":…,"key":…,"ip":…}   (no answer)

Anything else as an answer is a denial "Error on Auth"; a line without the "rid" of a waiting
question refuses the question that waits longest, and only that one. No answer within
--auth-timeout is "Auth Timeout" (and the helper restarts the program). Write logs to stderr,
never stdout: the helper logs each stderr line (escaped), so one print is one log line.

This example admits the users below; only "admin" may use the key "private"; ids starting with
"sleepy" or "throw" show the timeout and the error paths.
"""
import json
import sys
import time

USERS = {"alice": "alice-token", "bob": "bob-token", "admin": "admin-token"}


def decide(query):
    if query["id"].startswith("sleepy"):
        time.sleep(3600)  # never answers: the client gets "Auth Timeout"
    if query["id"].startswith("throw"):
        return {"error": "the policy failed"}  # not an answer: "Error on Auth"
    if USERS.get(query["id"]) != query["token"]:
        return {"allow": False, "reason": "nope"}
    if query["key"] == "private" and query["id"] != "admin":
        return {"allow": False, "reason": "Invalid Key"}
    return {"allow": True}


for line in sys.stdin:
    message = json.loads(line)
    # Every value came from a client: escape it (newlines, control characters, U+2028…), so
    # that one log line stays one line and a client cannot forge another.
    # The token is a secret: only its length is logged.
    fields = " ".join(
        f"{name}={str(message.get(name, '')).encode('unicode_escape').decode('ascii')}"
        for name in ("id", "key", "ip", "version"))
    if "token" in message:
        fields += f" token=<{len(str(message['token']))} chars>"
    print(f"policy: {message['type']} {fields}", file=sys.stderr, flush=True)
    if message["type"] == "auth":
        print(json.dumps({"rid": message["rid"], **decide(message)}), flush=True)
