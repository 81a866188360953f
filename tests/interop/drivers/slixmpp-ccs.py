"""gcmspec driver (docs/client-drivers.md, contract gcmspec-driver/1): PyPI's slixmpp used
as a CCS app server, the way Google's Python sample for the connection server did it (ccs.py
in the GCM documentation), ported from xmpppy to slixmpp:

- every upstream message (a `<gcm>` payload without `message_type`) is acked at once;
- at most 100 messages wait for their ack or nack (the sample's `unacked_messages_quota`),
  the rest queue;
- acks and nacks give quota back; anything else (receipts, control messages) is not handled;
- message ids are random; a nacked message is not sent again.

Left out of the sample: its echo of each upstream message back to the device. The verdicts
of this driver are the sample's: what an app server that copies it does.

Run: gcmspec client --driver "tests/interop/.venv/bin/python tests/interop/drivers/slixmpp-ccs.py"
"""
import asyncio
import json
import os
import sys
import threading
import uuid
from importlib.metadata import version

import slixmpp
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

HOST, PORT = os.environ.get("GCMSPEC_XMPP_HOST"), os.environ.get("GCMSPEC_XMPP_PORT")
SENDER, KEY = os.environ["GCMSPEC_SENDER_ID"], os.environ["GCMSPEC_API_KEY"]
QUOTA = 100
ANSWER_WAIT = 10


def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Ccs(slixmpp.ClientXMPP):
    def __init__(self):
        super().__init__("%s@gcm.googleapis.com" % SENDER, KEY)
        # The reference listens in plain TCP here; CCS took SASL PLAIN over TLS.
        self["feature_mechanisms"].unencrypted_plain = True
        self.enable_direct_tls = False
        self.enable_starttls = False
        self.enable_plaintext = True
        self.started = asyncio.Event()
        self.add_event_handler("session_start", lambda _: self.started.set())
        gcm = MatchXPath("{jabber:client}message/{google:mobile:data}gcm")
        self.register_handler(Callback("gcm", gcm, self.on_gcm))
        self.quota = QUOTA
        self.queue = []
        self.waiting = {}  # message_id -> future of its ack or nack

    def send_gcm(self, payload):
        msg = self.Message()
        gcm = ET.Element("{google:mobile:data}gcm")
        gcm.text = json.dumps(payload)
        msg.append(gcm)
        msg.send()

    def on_gcm(self, msg):
        payload = json.loads(msg.xml.find("{google:mobile:data}gcm").text)
        kind = payload.get("message_type")
        if kind is None:
            # The sample: acknowledge the incoming message immediately.
            self.send_gcm({"to": payload.get("from"), "message_type": "ack", "message_id": payload.get("message_id")})
        elif kind in ("ack", "nack"):
            self.quota += 1
            done = self.waiting.pop(payload.get("message_id"), None)
            if done is not None and not done.done():
                done.set_result(payload)
            self.flush()

    def flush(self):
        while self.queue and self.quota > 0:
            self.send_gcm(self.queue.pop(0))
            self.quota -= 1

    def submit(self, payload):
        answered = asyncio.get_running_loop().create_future()
        self.waiting[payload["message_id"]] = answered
        self.queue.append(payload)
        self.flush()
        return answered


def payload_of(to, message, n=None):
    p = {"to": to, "message_id": uuid.uuid4().hex, "data": dict(message.get("data", {}))}
    for k in ("collapse_key", "time_to_live", "delivery_receipt_requested"):
        if k in message:
            p[k] = message[k]
    if n is not None:
        p["data"]["n"] = str(n)
    return p


def returned(to, answer):
    if answer.get("message_type") == "ack" and ("success" in answer or "failed_registration_ids" in answer):
        out = {"results": []}
        for k in ("success", "failure"):
            if k in answer:
                out[k] = answer[k]
        if "failed_registration_ids" in answer:
            out["failed_tokens"] = answer["failed_registration_ids"]
        return out
    r = {"token": to, "message_id": answer.get("message_id")}
    if answer.get("message_type") == "nack":
        r["error"] = answer.get("error")
    elif answer.get("registration_id"):
        r["canonical"] = answer["registration_id"]
    return {"results": [r]}


class Driver:
    def __init__(self):
        self.ccs = None

    async def session(self):
        if self.ccs is None:
            self.ccs = Ccs()
            self.ccs.connect(HOST, int(PORT))
            await asyncio.wait_for(self.ccs.started.wait(), ANSWER_WAIT)
        return self.ccs

    async def act(self, req):
        op = req.get("op")
        if op == "send":
            if req["via"] != "xmpp":
                return {"unsupported": "this app server speaks XMPP only"}
            to = req["to"].get("token") or req["to"].get("notification_key")
            if to is None:
                return {"unsupported": "XMPP sends to one `to`"}
            ccs = await self.session()
            try:
                answer = await asyncio.wait_for(ccs.submit(payload_of(to, req["message"])), ANSWER_WAIT)
            except asyncio.TimeoutError:
                return {"raised": "no ack or nack within %d s" % ANSWER_WAIT}
            return {"returned": returned(to, answer)}
        if op == "xmpp-listen":
            if req.get("connections", 1) > 1:
                return {"unsupported": "the sample keeps one connection"}
            await self.session()
            await asyncio.sleep(req.get("seconds", 0))
            return {"returned": {}}
        if op == "xmpp-burst":
            to = req["to"].get("token") or req["to"].get("notification_key")
            ccs = await self.session()
            answers = [ccs.submit(payload_of(to, req["message"], n)) for n in range(req["count"])]
            try:
                await asyncio.wait_for(asyncio.gather(*answers), ANSWER_WAIT * 3)
            except asyncio.TimeoutError:
                return {"raised": "not every message was answered within %d s" % (ANSWER_WAIT * 3)}
            return {"returned": {}}
        if op == "xmpp-close":
            if self.ccs is not None:
                self.ccs.disconnect()
                await asyncio.sleep(0.1)
                self.ccs = None
            return {"returned": {}}
        return {"unsupported": "this app server has no %s" % op}


async def main():
    loop = asyncio.get_running_loop()
    lines = asyncio.Queue()

    def read():
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read, daemon=True).start()
    say({
        "contract": "gcmspec-driver/1",
        "library": "slixmpp",
        "version": version("slixmpp"),
        "supports": ["xmpp"],
    })
    driver = Driver()
    while True:
        line = await lines.get()
        if line is None:
            break
        if not line.strip():
            continue
        try:
            req = json.loads(line)
        except ValueError as e:
            say({"id": 0, "raised": "not a request: %s" % e})
            continue
        try:
            reply = await driver.act(req)
        except Exception as e:  # what the library raised, whatever it is
            reply = {"raised": "%s: %s" % (type(e).__name__, e)}
        say(dict({"id": req.get("id", 0)}, **reply))
    if driver.ccs is not None:
        driver.ccs.disconnect()


if __name__ == "__main__":
    asyncio.run(main())
