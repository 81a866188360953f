"""PyPI's slixmpp as a CCS app server against the reference: logs in, gets an ack, a nack and a
device-group ack, receives a device's upstream message and acks it, gets a delivery receipt
and acks it, and is told to drain. The device side is driven through the control API. Prints
what came back as one JSON line for the Rust trial to check.

Usage: python ccs_app_server.py BASE_URL XMPP_HOST XMPP_PORT SENDER_ID SERVER_KEY
       PHONE OFFLINE_PHONE NOTIFICATION_KEY
"""
import asyncio
import json
import sys
import urllib.request

import slixmpp
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

url, host, port, sender, key, phone, offline, group_key = sys.argv[1:9]
WAIT = 10


def control(path, body):
    req = urllib.request.Request(
        f"{url}/_gcmspec/v1/{path}",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=WAIT) as resp:
        return resp.status


class AppServer(slixmpp.ClientXMPP):
    def __init__(self):
        super().__init__(f"{sender}@gcm.googleapis.com", key)
        # CCS took SASL PLAIN; the reference here listens in plain TCP.
        self["feature_mechanisms"].unencrypted_plain = True
        self.enable_direct_tls = False
        self.enable_starttls = False
        self.enable_plaintext = True
        self.inbox = asyncio.Queue()
        self.started = asyncio.Event()
        self.add_event_handler("session_start", lambda _: self.started.set())
        gcm = MatchXPath("{jabber:client}message/{google:mobile:data}gcm")
        self.register_handler(Callback("gcm", gcm, self.on_gcm))

    def on_gcm(self, msg):
        self.inbox.put_nowait(json.loads(msg.xml.find("{google:mobile:data}gcm").text))

    def send_gcm(self, payload):
        msg = self.Message()
        gcm = ET.Element("{google:mobile:data}gcm")
        gcm.text = json.dumps(payload)
        msg.append(gcm)
        msg.send()

    async def answer(self, payload):
        self.send_gcm(payload)
        return await self.next()

    async def next(self):
        return await asyncio.wait_for(self.inbox.get(), WAIT)


async def main():
    app = AppServer()
    app.connect(host, int(port))
    await asyncio.wait_for(app.started.wait(), WAIT)
    seen = {
        "ack": await app.answer({"to": phone, "message_id": "m-ack", "data": {"n": "1"}}),
        "nack": await app.answer({"to": "not-a-registration-id", "message_id": "m-nack", "data": {"n": "2"}}),
        "group_ack": await app.answer({"to": group_key, "message_id": "m-group", "data": {"n": "3"}}),
    }
    # A device messages its app server, which acks it.
    control(f"instances/{phone}/upstream", {"to": f"{sender}@gcm.googleapis.com", "data": {"hello": "server"}})
    seen["upstream"] = await app.next()
    app.send_gcm({"to": phone, "message_id": seen["upstream"]["message_id"], "message_type": "ack"})
    # A receipt once the offline device connects; acked too.
    seen["receipt_ack"] = await app.answer(
        {"to": offline, "message_id": "m-receipt", "delivery_receipt_requested": True, "data": {"n": "4"}}
    )
    control(f"instances/{offline}/connectivity", {"state": "awake"})
    seen["receipt"] = await app.next()
    app.send_gcm({"to": "gcm.googleapis.com", "message_id": seen["receipt"]["message_id"], "message_type": "ack"})
    # Draining: the server says so on this connection.
    control(f"senders/{sender}/drain", {})
    seen["control"] = await app.next()
    app.disconnect()
    print(json.dumps(seen))


asyncio.run(main())
