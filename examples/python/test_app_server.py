"""The example app server judged by the gcmspec reference (the pytest plugin's `gcmspec`
fixture). Run with `pytest examples/python` once `pip install gcmspec pytest`."""

from app_server import AppServer


def verdict(verdicts, rule_id):
    return next(r for r in verdicts["rules"] if r["id"] == rule_id)


def test_the_bug_is_named(gcmspec):
    phone = gcmspec.register()
    # The first send to the phone finds its app registered again: a canonical id comes back.
    gcmspec.script({"kind": "canonical", "registration_id": phone})
    app = AppServer(gcmspec.url, gcmspec.server_key)
    app.phones["chris"] = phone
    app.notify("chris", "first")
    # A minute later (on the reference's clock): the answer was read by then, whatever
    # connection the next send comes on.
    gcmspec.advance(60)
    app.notify("chris", "second")
    # The point of this test: without it, the plugin fails the test on the violation.
    gcmspec.expect_violation("app.canonical-id.replace")
    v = verdict(gcmspec.verdicts(), "app.canonical-id.replace")
    assert v["outcome"] == "violated"
    assert "sent to it again" in v["violations"][0]["message"]


def test_the_fixed_app_server_passes(gcmspec):
    phone = gcmspec.register()
    gcmspec.script({"kind": "canonical", "registration_id": phone})
    app = AppServer(gcmspec.url, gcmspec.server_key, replaces_canonical_ids=True)
    app.phones["chris"] = phone
    app.notify("chris", "first")
    gcmspec.advance(60)
    app.notify("chris", "second")
    assert verdict(gcmspec.verdicts(), "app.canonical-id.replace")["outcome"] == "passed"
    # Both messages reached the phone, under its new id.
    assert len(gcmspec.messages(phone)) == 2
