"""The gcmspec pytest plugin: a reference GCM/FCM server for every test, and a failed test
when the app server under test breaks a MUST rule (docs/app-servers.md).

Loaded by pytest on its own once gcmspec is installed (entry point ``pytest11``). The
fixture ``gcmspec`` gives each test a fresh sender on a server started once per session.
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


def pytest_configure(config):
    config.addinivalue_line("markers", "gcmspec: uses the gcmspec reference server")


@pytest.fixture(scope="session")
def gcmspec_server(request):
    """The reference, started once per session."""
    ref = Reference.start(clock=request.config.getoption("--gcmspec-clock"))
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

    def verdicts(self):
        return self.reference.verdicts(self.sender)

    def control(self, method, path, body=None):
        return self.reference.control(method, path, body, sender=self.sender)

    def expect_violation(self, rule_id):
        """This test means the app server to break ``rule_id``: it does not fail for it."""
        self.expected.add(rule_id)

    def unexpected_must_violations(self):
        lines = must_violations(self.verdicts())
        return [l for l in lines if l.split(":", 1)[0] not in self.expected]


@pytest.fixture
def gcmspec(gcmspec_server):
    """A fresh sender on the session's reference; the test fails on a MUST violation."""
    return Fake(gcmspec_server, gcmspec_server.new_sender())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    # A test that failed on its own is reported as it failed.
    result = yield
    fake = getattr(item, "funcargs", {}).get("gcmspec")
    if isinstance(fake, Fake):
        try:
            broken = fake.unexpected_must_violations()
        except GcmspecError as e:
            raise AssertionError("gcmspec: could not read the verdicts: %s" % e) from None
        if broken:
            raise AssertionError("the app server broke MUST rules:\n" + "\n".join(broken))
    return result
