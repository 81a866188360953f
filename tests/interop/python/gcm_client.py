"""Sends through PyPI's python-gcm to the reference: JSON and plain-text sends, canonical ids,
NotRegistered, and a wrong server key. Prints what the client made of each as one JSON line
for the Rust trial to check.

Usage: python gcm_client.py BASE_URL SERVER_KEY TOKEN OLD_ID CANONICAL_ID UNREGISTERED_ID
"""
import json
import sys

from gcm import GCM
from gcm.gcm import GCMAuthenticationException, GCMNotRegisteredException

url, key, token, old, canonical, gone = sys.argv[1:7]


def client(server_key):
    gcm = GCM(server_key)
    gcm.url = url + "/gcm/send"
    return gcm


gcm = client(key)
out = {
    # JSON: the client groups results by outcome and canonical ids by old id.
    "json": gcm.json_request(registration_ids=[token, old], data={"n": "json"}, retries=1),
    "json_gone": gcm.json_request(registration_ids=[gone], data={"n": "gone"}, retries=1),
    # Plain text: the client reads `id=` and the `registration_id=` line.
    "plaintext": gcm.plaintext_request(
        registration_id=token, data={"n": "text"}, collapse_key="score", time_to_live=60, retries=1
    ),
    "plaintext_canonical": gcm.plaintext_request(registration_id=old, data={"n": "text"}, retries=1),
}
try:
    gcm.plaintext_request(registration_id=gone, data={"n": "gone"}, retries=1)
    out["plaintext_gone"] = "no error"
except GCMNotRegisteredException:
    out["plaintext_gone"] = "NotRegistered"
try:
    client("AIzaNotTheServerKey").json_request(registration_ids=[token], data={"n": "x"}, retries=1)
    out["wrong_key"] = "no error"
except GCMAuthenticationException:
    out["wrong_key"] = "AuthenticationException"
print(json.dumps(out))
