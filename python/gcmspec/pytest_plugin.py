"""The gcmspec pytest plugin: a reference GCM/FCM server for every test, and a failed test
when the app server under test breaks a MUST rule (docs/app-servers.md).

Loaded by pytest on its own once gcmspec is installed (entry point ``pytest11``). The
fixture ``gcmspec`` gives each test a fresh sender on a server started once per session.

When the test body returns, the verdicts are read settled: as if every window had closed,
so an upstream message never acked (on a connection still open), or a failure never
retried, counts as missed even if the test did not wait for it; an ack still on its way is
let in first (the reference waits until the copy is a second old, or the ack lands). Rules the test named with ``expect_violation`` must have
been violated.
"""

import pytest

from . import GcmspecError, Reference, must_violations


def pytest_addoption(parser):
    group = parser.getgroup("gcmspec")
    group.addoption(
        "--gcmspec-clock",
        default="virtual",
        choices=["virtual", "wall"],
        help="the reference's clock: virtual (moves when advanced) or wall (the machine's)",
    )
    parser.addini(
        "gcmspec_serve_args",
        type="args",
        default=[],
        help="more arguments for `gcmspec serve` (e.g. --http 127.0.0.1:48000 --seed 7)",
    )


def pytest_configure(config):
    config.addinivalue_line("markers", "gcmspec: uses the gcmspec reference server")


@pytest.fixture(scope="session")
def gcmspec_server(request):
    """The reference, started once per session."""
    ref = Reference.start(
        clock=request.config.getoption("--gcmspec-clock"),
        extra_args=request.config.getini("gcmspec_serve_args"),
    )
    yield ref
    ref.stop()


class Fake:
    """One test's view of the reference: its own sender, and what the control API offers."""

    def __init__(self, ref, sender):
        self.reference = ref
        self.sender = sender
        self.url = ref.url
        self.sender_id = sender.sender_id
        self.server_key = sender.server_key
        self.xmpp_host, self.xmpp_port = ref.xmpp if ref.xmpp else (None, None)
        self.expected = set()

    def register(self, **kw):
        """A device registered for this test's sender: its registration id."""
        return self.reference.register(self.sender, **kw)

    def messages(self, registration_id):
        return self.reference.messages(registration_id)

    def script(self, answer):
        return self.reference.script(self.sender, answer)

    def advance(self, seconds):
        return self.reference.advance(self.sender, seconds)

    def journal(self, after=None):
        return self.reference.journal(self.sender, after)

    def verdicts(self, settled=False):
        return self.reference.verdicts(self.sender, settled=settled)

    def control(self, method, path, body=None):
        return self.reference.control(method, path, body, sender=self.sender)

    def expect_violation(self, rule_id):
        """This test means the app server to break ``rule_id``: the test fails unless it
        does (and not for it)."""
        known = [r["id"] for r in self.verdicts()["rules"]]
        if rule_id not in known:
            raise ValueError("no app-server rule %r (known: %s)" % (rule_id, ", ".join(known)))
        self.expected.add(rule_id)

    def problems(self):
        """What fails the test: MUST violations not expected, and expected violations that
        did not happen, from the settled verdicts."""
        verdicts = self.verdicts(settled=True)
        lines = [l for l in must_violations(verdicts) if l.split(":", 1)[0] not in self.expected]
        outcomes = {r["id"]: r["outcome"] for r in verdicts["rules"]}
        for rule_id in sorted(self.expected):
            if outcomes.get(rule_id) != "violated":
                lines.append("%s: expected to be violated, it was %s" % (rule_id, outcomes.get(rule_id)))
        return lines


@pytest.fixture
def gcmspec(gcmspec_server):
    """A fresh sender on the session's reference; the test fails on a MUST violation."""
    return Fake(gcmspec_server, gcmspec_server.new_sender())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    fake = getattr(item, "funcargs", {}).get("gcmspec")
    try:
        result = yield
    except BaseException:
        # A test that failed on its own is reported as it failed, with what gcmspec saw.
        if isinstance(fake, Fake):
            try:
                seen = must_violations(fake.verdicts(settled=True))
            except GcmspecError as e:
                seen = ["(could not read the verdicts: %s)" % e]
            if seen:
                item.add_report_section("call", "gcmspec MUST violations", "\n".join(seen))
        raise
    if isinstance(fake, Fake):
        try:
            problems = fake.problems()
        except GcmspecError as e:
            raise AssertionError("gcmspec: could not read the verdicts: %s" % e) from None
        if problems:
            raise AssertionError("the app server, as gcmspec judged it:\n" + "\n".join(problems))
    return result
