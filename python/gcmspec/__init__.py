"""gcmspec from Python: the reference GCM/FCM server as a fake for your tests.

The wheel carries the ``gcmspec`` binary; this module starts ``gcmspec serve`` on ephemeral
loopback ports and talks to its control API (docs/control-api.md) with nothing but the
standard library. The pytest plugin (``gcmspec.pytest_plugin``) builds on it.

    from gcmspec import Reference

    with Reference.start() as ref:
        sender = ref.new_sender()
        phone = ref.register(sender)
        # ... point your app server at ref.url with sender.server_key ...
        print(ref.verdicts(sender)["summary"])
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
import urllib.error
import urllib.parse
import urllib.request

__all__ = ["Reference", "Sender", "binary", "GcmspecError"]

PREFIX = "/_gcmspec/v1/"


class GcmspecError(Exception):
    """The reference could not be started, or a control-API call was refused."""


def binary():
    """Where the ``gcmspec`` binary is: the wheel's, else the one on PATH
    (``GCMSPEC_BIN`` overrides both)."""
    explicit = os.environ.get("GCMSPEC_BIN")
    if explicit:
        return explicit
    name = "gcmspec.exe" if sys.platform == "win32" else "gcmspec"
    scripts = sysconfig.get_path("scripts")
    candidate = os.path.join(scripts, name) if scripts else None
    if candidate and os.path.exists(candidate):
        return candidate
    found = shutil.which("gcmspec")
    if not found:
        raise GcmspecError("no gcmspec binary: pip install gcmspec, or set GCMSPEC_BIN")
    return found


class Sender:
    """A sender (project): its id and server key."""

    def __init__(self, sender_id, server_key):
        self.sender_id = sender_id
        self.server_key = server_key

    def __repr__(self):
        return "Sender(%r)" % self.sender_id


class Reference:
    """A running ``gcmspec serve``: its HTTP URL, XMPP address and control API."""

    def __init__(self, process, url, xmpp, first_sender, banner):
        self.process = process
        self.url = url
        self.xmpp = xmpp
        self.first_sender = first_sender
        self.banner = banner

    @classmethod
    def start(cls, clock="virtual", xmpp=True, extra_args=(), timeout=30):
        """Starts ``gcmspec serve`` on ephemeral loopback ports and waits for its banner."""
        extra = list(extra_args)
        given = {a.split("=", 1)[0] for a in extra if a.startswith("--")}
        args = [binary(), "serve", "--clock", clock]
        # Addresses in extra_args take the place of the ephemeral ones.
        if "--http" not in given:
            args += ["--http", "127.0.0.1:0"]
        if xmpp and "--xmpp" not in given:
            args += ["--xmpp", "127.0.0.1:0"]
        args += extra
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = []
        done = threading.Event()

        def read():
            for line in process.stdout:
                lines.append(line.rstrip("\n"))
                if line.startswith("state is kept"):
                    done.set()
            done.set()

        threading.Thread(target=read, daemon=True).start()
        if not done.wait(timeout) or process.poll() is not None:
            process.kill()
            raise GcmspecError("gcmspec serve did not start: %s %s" % (lines, process.stderr.read()))
        url = xmpp_address = sender = None
        for line in lines:
            if line.startswith("gcmspec reference") and "listening on " in line:
                url = line.split("listening on ", 1)[1].split()[0]
            elif line.startswith("sender id "):
                parts = line[len("sender id "):].split(", server key ")
                sender = Sender(parts[0], parts[1])
            elif line.startswith("XMPP connection server on ") and "(plain TCP)" in line:
                hostport = line[len("XMPP connection server on "):].split()[0]
                host, port = hostport.rsplit(":", 1)
                xmpp_address = (host, int(port))
        if not url:
            process.kill()
            raise GcmspecError("no address in gcmspec serve's banner: %s" % lines)
        return cls(process, url, xmpp_address, sender, lines)

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # ---- the control API -----------------------------------------------------------

    def control(self, method, path, body=None, sender=None):
        """A control-API call (``path`` below /_gcmspec/v1/); with ``sender``, its key goes
        along (a sender's journal, verdicts and scripts need it). Returns the JSON answer."""
        data = None
        headers = {}
        if body is not None or method == "POST":
            data = json.dumps(body if body is not None else {}).encode()
            headers["Content-Type"] = "application/json"
        if sender is not None:
            headers["Authorization"] = "key=" + sender.server_key
        request = urllib.request.Request(self.url + PREFIX + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                text = resp.read().decode()
        except urllib.error.HTTPError as e:
            raise GcmspecError("%s %s: %s %s" % (method, path, e.code, e.read().decode())) from None
        return json.loads(text) if text else None

    def new_sender(self):
        s = self.control("POST", "senders", {})
        return Sender(s["sender_id"], s["server_key"])

    def register(self, sender, platform=None, package=None, account=None):
        """A device (app instance) registered for ``sender``: its registration id."""
        body = {"sender_ids": [sender.sender_id]}
        for k, v in (("platform", platform), ("package", package), ("account", account)):
            if v is not None:
                body[k] = v
        return self.control("POST", "instances", body)["registration_id"]

    def messages(self, registration_id):
        """What a device received."""
        return self.control("GET", "instances/%s/messages" % registration_id)["messages"]

    def script(self, sender, answer):
        """What the reference answers ``sender`` next (docs/app-servers.md)."""
        return self.control("POST", "senders/%s/script" % sender.sender_id, answer, sender=sender)

    def advance(self, sender, seconds):
        """Moves ``sender``'s clock forward."""
        return self.control("POST", "senders/%s/clock" % sender.sender_id, {"advance_ms": int(seconds * 1000)})

    def journal(self, sender, after=None):
        query = "" if after is None else "?after=%d" % after
        return self.control("GET", "senders/%s/journal%s" % (sender.sender_id, query), sender=sender)

    def verdicts(self, sender, settled=False):
        """Every app-server rule's verdict on what ``sender``'s app server did so far. With
        ``settled``, as if every window had closed: a retry or an ack still awaited counts as
        missed (what to read when the app server is done)."""
        query = "?settled=true" if settled else ""
        return self.control("GET", "senders/%s/verdicts%s" % (sender.sender_id, query), sender=sender)


def must_violations(verdicts):
    """Each MUST violation in a verdicts document, a line each."""
    out = []
    for rule in verdicts["rules"]:
        if rule["outcome"] == "violated" and rule["level"] == "must":
            for v in rule.get("violations", []):
                out.append("%s: %s" % (rule["id"], v["message"]))
    return out
