"""Drive Debian's headless Chromium over the DevTools protocol on a pipe (--remote-debugging-pipe:
commands as NUL-terminated JSON on fd 3, replies and events on fd 4), with nothing but the
standard library: open a page, evaluate JavaScript in it, wait for a condition, take a
screenshot. Used by tests/test_dashboard.sh."""
import base64, json, os, shutil, subprocess, tempfile, time


class Browser:
    def __init__(self, width=1400, height=1000):
        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        if not exe:
            raise SystemExit("chromium is not installed (make deps)")
        self.profile = tempfile.mkdtemp(prefix="knlp-chromium-")
        to_r, self.to_w = os.pipe()  # we write commands, chromium reads fd 3
        self.from_r, from_w = os.pipe()  # chromium writes fd 4, we read
        def fds():  # in the child: the read end on 3, the write end on 4, both kept across exec
            a, b = os.dup(to_r), os.dup(from_w)  # out of the way of 3 and 4 first
            os.dup2(a, 3)
            os.dup2(b, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)
        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
             f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "--hide-scrollbars", "about:blank"],
            close_fds=False, preexec_fn=fds, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_r)
        os.close(from_w)
        self.buf = b""
        self.next_id = 0
        self.session = None
        self.width, self.height = width, height

    def _send(self, method, params=None, session=True):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self.to_w, json.dumps(msg).encode() + b"\0")
        want = self.next_id
        deadline = time.time() + 60
        while time.time() < deadline:
            while b"\0" not in self.buf:
                chunk = os.read(self.from_r, 1 << 20)
                if not chunk:
                    raise SystemExit("chromium closed the pipe")
                self.buf += chunk
            raw, self.buf = self.buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == want:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
        raise SystemExit(f"{method}: no reply in 60 s")

    def open(self, url):
        if self.session is None:
            t = self._send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
            self.session = self._send("Target.attachToTarget", {"targetId": t, "flatten": True}, session=False)["sessionId"]
            self._send("Page.enable")
            self._send("Emulation.setDeviceMetricsOverride",
                       {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False})
        self._send("Page.navigate", {"url": url})

    def eval(self, expr):
        r = self._send("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr}: {r['exceptionDetails'].get('text')}")
        return r["result"].get("value")

    def wait(self, expr, timeout=20):
        """Poll until the JavaScript expression is truthy; returns its value."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                v = self.eval(expr)
                if v:
                    return v
            except RuntimeError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for: {expr}")

    def screenshot(self, path):
        data = self._send("Page.captureScreenshot", {"format": "png"})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self):
        try:
            self._send("Browser.close", session=False)
        except BaseException:
            pass
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)
