"""The plugin itself: a test whose app server breaks a MUST rule fails, with the rule's
words; one that keeps them passes. (Runs inner pytest sessions: run with `-p pytester`.)"""


BROKEN = '''
import json, urllib.request

def test_sends_a_bad_time_to_live(gcmspec):
    phone = gcmspec.register()
    body = json.dumps({"to": phone, "time_to_live": -1, "data": {"a": "b"}}).encode()
    req = urllib.request.Request(gcmspec.url + "/fcm/send", data=body,
        headers={"Authorization": "key=" + gcmspec.server_key, "Content-Type": "application/json"})
    urllib.request.urlopen(req).read()

def test_keeps_the_rules(gcmspec):
    phone = gcmspec.register()
    body = json.dumps({"to": phone, "time_to_live": 60, "data": {"a": "b"}}).encode()
    req = urllib.request.Request(gcmspec.url + "/fcm/send", data=body,
        headers={"Authorization": "key=" + gcmspec.server_key, "Content-Type": "application/json"})
    urllib.request.urlopen(req).read()
'''


def test_a_must_violation_fails_the_test(pytester):
    pytester.makepyfile(BROKEN)
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*app.send.ttl-range*time_to_live -1*"])


EXPECTED = '''
import json, urllib.request, pytest

def send(gcmspec, ttl):
    phone = gcmspec.register()
    body = json.dumps({"to": phone, "time_to_live": ttl, "data": {"a": "b"}}).encode()
    req = urllib.request.Request(gcmspec.url + "/fcm/send", data=body,
        headers={"Authorization": "key=" + gcmspec.server_key, "Content-Type": "application/json"})
    urllib.request.urlopen(req).read()

def test_breaks_it_as_meant(gcmspec):
    gcmspec.expect_violation("app.send.ttl-range")
    send(gcmspec, -1)

def test_meant_to_break_it_but_did_not(gcmspec):
    gcmspec.expect_violation("app.send.ttl-range")
    send(gcmspec, 60)

def test_a_misspelled_rule(gcmspec):
    with pytest.raises(ValueError, match="no app-server rule"):
        gcmspec.expect_violation("app.send.ttl-rnage")
'''


def test_an_expected_violation_must_happen(pytester):
    pytester.makepyfile(EXPECTED)
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*app.send.ttl-range: expected to be violated, it was passed*"])


APP_SERVER = '''
import socket, base64, json, re, threading, time, pytest

@pytest.fixture
def app_server(gcmspec):
    """A logged-in XMPP connection, open until the test's teardown (after its verdicts)."""
    s = socket.create_connection((gcmspec.xmpp_host, gcmspec.xmpp_port), timeout=5)
    def say(text, until):
        s.sendall(text.encode())
        got = ""
        while until not in got:
            got += s.recv(65536).decode()
    header = ("<stream:stream to='gcm.googleapis.com' version='1.0' xmlns='jabber:client' "
              "xmlns:stream='http://etherx.jabber.org/streams'>")
    say(header, "</stream:features>")
    auth = base64.b64encode(("\\0%s@gcm.googleapis.com\\0%s" % (gcmspec.sender_id, gcmspec.server_key)).encode()).decode()
    say("<auth mechanism='PLAIN' xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s</auth>" % auth, "success")
    say(header, "</stream:features>")
    say("<iq type='set'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>", "</iq>")
    yield s
    s.close()

def upstream(gcmspec, s):
    phone = gcmspec.register()
    gcmspec.control("POST", "instances/%s/upstream" % phone,
                    {"to": gcmspec.sender_id + "@gcm.googleapis.com", "data": {"hi": "there"}})
    got = ""
    while "</message>" not in got:
        got += s.recv(65536).decode()
    payload = json.loads(re.search(r"<gcm[^>]*>(.*)</gcm>", got, re.S).group(1).replace("&quot;", '"'))
    return payload

def ack(s, payload):
    body = json.dumps({"to": payload["from"], "message_id": payload["message_id"], "message_type": "ack"})
    s.sendall(("<message id=''><gcm xmlns='google:mobile:data'>%s</gcm></message>" % body).encode())
'''

UNACKED = APP_SERVER + '''
def test_never_acks_an_upstream_message(gcmspec, app_server):
    upstream(gcmspec, app_server)
    # The test ends at once: the ack it never sent is still missed.
'''


def test_an_ack_never_sent_fails_the_test_though_it_did_not_wait(pytester):
    pytester.makepyfile(UNACKED)
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*app.xmpp.ack-upstream*"])


ACKED_LATE = APP_SERVER + '''
def test_acks_as_the_test_ends(gcmspec, app_server):
    payload = upstream(gcmspec, app_server)
    # The app server acks a moment after the test body returns: the ack was on its way.
    threading.Timer(0.2, ack, (app_server, payload)).start()
'''


def test_an_ack_on_its_way_as_the_test_ends_passes(pytester):
    pytester.makepyfile(ACKED_LATE)
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)
