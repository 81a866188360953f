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
