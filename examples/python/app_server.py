"""A small app server, of the kind app teams write: it stores its users' registration ids and
sends them notifications over GCM's HTTP API. It has a bug the reference's verdicts name:
when a send comes back with a canonical id, it goes on using the old one (unless built with
``replaces_canonical_ids=True``)."""

import json
import urllib.request


class AppServer:
    def __init__(self, url, server_key, replaces_canonical_ids=False):
        self.url = url
        self.server_key = server_key
        self.replaces_canonical_ids = replaces_canonical_ids
        # user -> the registration id stored for their phone
        self.phones = {}

    def notify(self, user, text):
        token = self.phones[user]
        body = json.dumps({"to": token, "data": {"text": text}}).encode()
        request = urllib.request.Request(
            self.url + "/fcm/send",
            data=body,
            headers={"Authorization": "key=" + self.server_key, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            answer = json.loads(resp.read())
        result = answer["results"][0]
        if self.replaces_canonical_ids and "registration_id" in result:
            self.phones[user] = result["registration_id"]
        return result
