"""gcmspec driver (docs/client-drivers.md, contract gcmspec-driver/1) for PyPI's python-gcm:
makes it do what `gcmspec client` asks, as an app server would call it, and says what it
returned. python-gcm sends JSON to lists of tokens (`json_request`) and the plain-text form
to one token (`plaintext_request`); it has no notification-key sends (it has no `to` but
topics), no device-group management and no XMPP.

Its back-off is jittered with `random`: seeded here, so that a run is the same every time.

Run: gcmspec client --driver "tests/interop/.venv/bin/python tests/interop/drivers/python-gcm.py"
"""
import json
import os
import random
import sys
from importlib.metadata import version

import gcm as gcm_module
from gcm import GCM

random.seed(0)
client = GCM(os.environ["GCMSPEC_API_KEY"])
client.url = os.environ["GCMSPEC_HTTP_URL"] + "/gcm/send"


def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def options(message):
    kw = {"data": message.get("data", {})}
    if "collapse_key" in message:
        kw["collapse_key"] = message["collapse_key"]
    if "time_to_live" in message:
        kw["time_to_live"] = message["time_to_live"]
    return kw


def from_info(info, tokens):
    """json_request's info ({"success": {id: message_id}, "canonical": {old: new},
    "errors": {error: [ids]}}) as the contract's results."""
    info = info or {}
    errors = {t: e for e, ids in info.get("errors", {}).items() for t in ids}
    out = []
    for t in tokens:
        r = {"token": t}
        if t in info.get("success", {}):
            r["message_id"] = str(info["success"][t])
        if t in info.get("canonical", {}):
            r["canonical"] = info["canonical"][t]
        if t in errors:
            r["error"] = errors[t]
        out.append(r)
    return {"results": out}


# What a caller of plaintext_request catches, and the service's code it stands for.
PLAIN_TEXT_ERRORS = {
    "GCMNotRegisteredException": "NotRegistered",
    "GCMInvalidRegistrationException": "InvalidRegistration",
    "GCMMismatchSenderIdException": "MismatchSenderId",
    "GCMMessageTooBigException": "MessageTooBig",
}


def act(req):
    if req.get("op") != "send":
        return {"unsupported": "python-gcm has no %s" % req.get("op")}
    to, via, message = req["to"], req["via"], req["message"]
    if "notification_key" in to:
        return {"unsupported": "python-gcm cannot send to a notification key (no `to` but topics)"}
    tokens = to["tokens"] if "tokens" in to else [to["token"]]
    try:
        if via == "plain-text":
            try:
                canonical = client.plaintext_request(registration_id=tokens[0], **options(message))
            except gcm_module.gcm.GCMException as e:
                code = PLAIN_TEXT_ERRORS.get(type(e).__name__)
                if code is None:
                    raise
                return {"returned": {"results": [{"token": tokens[0], "error": code}]}}
            result = {"token": tokens[0]}
            if canonical:
                result["canonical"] = canonical
            return {"returned": {"results": [result]}}
        if via == "json":
            return {"returned": from_info(client.json_request(registration_ids=tokens, **options(message)), tokens)}
        return {"unsupported": "python-gcm has no XMPP"}
    except Exception as e:  # what the library raised, whatever it is
        return {"raised": "%s: %s" % (type(e).__name__, e)}


def main():
    say({
        "contract": "gcmspec-driver/1",
        "library": "python-gcm",
        "version": version("python-gcm"),
        "supports": ["http", "multicast", "plain-text"],
    })
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
        except ValueError as e:
            say({"id": 0, "raised": "not a request: %s" % e})
            continue
        say(dict({"id": req.get("id", 0)}, **act(req)))


if __name__ == "__main__":
    main()
