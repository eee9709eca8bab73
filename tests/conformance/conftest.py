"""Fixtures for the OpenAI SDK conformance suite.

One module-scoped stack per test module:

- one ``fake-upstream --provider KIND --api-key ...`` per wire format (``openai``, which also
  stands in for ``openai-compatible`` and ``mistral`` targets, ``anthropic`` and ``gemini``), each
  on an OS-chosen port (it prints ``listening on BASE_URL`` as its first stdout line, and rejects
  any request that does not carry its key, the provider's way);
- ``switchyard-proxy`` on a temp manifest directory, data and admin ports chosen by the OS
  (both read back from its JSON ``switchyard-proxy listening`` log line), polled on
  ``/readyz`` until it is ready.

Binaries come from ``SWITCHYARD_PROXY_BIN`` and ``FAKE_UPSTREAM_BIN``, by default
``target/debug/switchyard-proxy`` and ``target/debug/fake-upstream`` under the repository root
(``cargo build -p proxy --features testing --bins``).

When a test fails, the output of every process of the stack is attached to its report.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, TypeVar

import openai
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PROXY_BIN = Path(os.environ.get("SWITCHYARD_PROXY_BIN", REPO_ROOT / "target/debug/switchyard-proxy"))
FAKE_BIN = Path(os.environ.get("FAKE_UPSTREAM_BIN", REPO_ROOT / "target/debug/fake-upstream"))

#: How long a process may take to print its address, and the proxy to become ready.
STARTUP_TIMEOUT = float(os.environ.get("SWITCHYARD_CONFORMANCE_STARTUP_TIMEOUT", "30"))
#: Per-request timeout of the SDK clients: a hang fails fast instead of blocking the suite.
REQUEST_TIMEOUT = 15.0

#: The key the fake OpenAI upstream requires; the proxy only gets it through the Secret.
UPSTREAM_KEY = "sk-conformance-123"
#: The keys of the other fakes, each in its own Secret key.
FAKE_KEYS = {
    "openai": UPSTREAM_KEY,
    "anthropic": "sk-ant-conformance-456",
    "gemini": "gm-conformance-789",
    "azure": "az-conformance-012",
    "cohere": "co-conformance-345",
}
#: Name every fake is started with: answers say ``hello from MODEL via conformance: ...``.
FAKE_NAME = "conformance"
#: The upstream model behind the `chat` alias.
UPSTREAM_MODEL = "gpt-4o-mini"
#: The model the mock provider pretends to be behind the `chat-mock` alias.
MOCK_MODEL = "mock-model-1"


@dataclass(frozen=True)
class ProviderTarget:
    """One ``spec.provider`` value, served by the fake that speaks its wire format."""

    #: ``spec.provider`` of its ProviderSecret.
    provider: str
    #: ``--provider`` of the fake-upstream process behind it.
    fake: str
    #: The upstream model of its target.
    model: str
    #: The ending of the fake's text answer, after ``hello from MODEL via conformance:``.
    answer_tail: str
    #: Whether the proxy serves ``/v1/embeddings`` through this provider.
    embeds: bool
    #: Whether the built-in price table prices the model (openai-compatible targets have no
    #: built-in prices).
    priced: bool = True
    #: Whether the fake reports usage on streams (the proxy asks; Mistral has no
    #: ``stream_options``, so its fake sends none and the proxy estimates).
    stream_usage: bool = True
    #: Whether the fake answers a weather question that comes with tools by a tool call.
    tools: bool = True
    #: Extra lines of the ProviderSecret's ``spec`` (YAML, two-space indent), e.g.
    #: ``"  azure: {apiVersion: '2024-10-21'}\n"``.
    provider_spec: str = ""

    @property
    def alias(self) -> str:
        return f"via-{self.provider}"

    @property
    def target(self) -> str:
        return f"{self.provider}-target"

    def answer(self) -> str:
        return f"hello from {self.model} via {FAKE_NAME}: {self.answer_tail}"


#: Every provider the proxy translates to, each behind its own alias ``via-PROVIDER``. A new
#: provider is one more entry here and the parametrized tests pick it up; its fake must be a
#: ``fake-upstream --provider`` kind (``proxy/src/testing/process.rs``) and a key in FAKE_KEYS.
#: For ``azure-openai`` that is e.g. ``ProviderTarget("azure-openai", "azure", "my-deployment",
#: "this is a fake azure completion", embeds=True, priced=False, tools=False,
#: provider_spec="  azure: {apiVersion: '2024-10-21'}\n")``, and likewise for ``cohere``.
PROVIDER_TARGETS = [
    ProviderTarget("openai", "openai", "gpt-4.1-mini", "this is a fake completion", embeds=True),
    ProviderTarget(
        "openai-compatible", "openai", "llama-3.1-8b-instruct", "this is a fake completion", embeds=True, priced=False
    ),
    ProviderTarget(
        "mistral", "openai", "mistral-small-latest", "this is a fake completion", embeds=True, stream_usage=False
    ),
    ProviderTarget("anthropic", "anthropic", "claude-haiku-4-5", "this is a fake anthropic reply", embeds=False),
    ProviderTarget("gemini", "gemini", "gemini-2.5-flash", "this is a fake gemini reply", embeds=True),
    # The v1 API (no apiVersion): the deployment name is the model. Azure deployments have no
    # built-in prices (a deployment name says nothing certain about the model behind it).
    ProviderTarget(
        "azure-openai", "azure", "gpt-4o-deployment", "this is a fake azure completion", embeds=True, priced=False
    ),
    ProviderTarget("cohere", "cohere", "command-a-03-2025", "this is a fake cohere reply", embeds=True),
]

#: alias -> (target name, what it is)
ROUTES = {
    "chat": "fake",  # the OpenAI fake, gpt-4o-mini, key from the Secret
    "chat-mock": "mocked",  # the built-in mock provider
    "broken": "failing",  # the OpenAI fake, model fail-500, no retries
    "wrong-key": "locked-out",  # the OpenAI fake with a key the fake rejects, no retries
    **{p.alias: p.target for p in PROVIDER_TARGETS},
}

T = TypeVar("T")


def provider_manifests(fakes: dict[str, str]) -> str:
    """A ProviderSecret and a ModelRoute per entry of PROVIDER_TARGETS."""
    docs = []
    for p in PROVIDER_TARGETS:
        docs.append(f"""\
apiVersion: switchyard.dev/v1alpha1
kind: ProviderSecret
metadata: {{name: {p.provider}}}
spec:
  provider: {p.provider}
  baseUrl: {fakes[p.fake]}
  apiKey: {{secretKeyRef: {{name: keys, key: {p.fake}}}}}
{p.provider_spec}---
apiVersion: switchyard.dev/v1alpha1
kind: ModelRoute
metadata: {{name: {p.alias}}}
spec:
  targets:
  - {{name: {p.target}, provider: {p.provider}, model: {p.model}}}
  retry: {{attempts: 0}}
""")
    return "---\n".join(docs)


def manifests(fakes: dict[str, str]) -> str:
    """Every object the proxy serves, as one multi-document YAML file."""
    fake_base_url = fakes["openai"]
    return f"""\
apiVersion: v1
kind: Secret
metadata: {{name: keys}}
stringData:
  up: {UPSTREAM_KEY}
  wrong: sk-not-the-right-key
  openai: {FAKE_KEYS["openai"]}
  anthropic: {FAKE_KEYS["anthropic"]}
  gemini: {FAKE_KEYS["gemini"]}
  azure: {FAKE_KEYS["azure"]}
  cohere: {FAKE_KEYS["cohere"]}
---
apiVersion: switchyard.dev/v1alpha1
kind: ProviderSecret
metadata: {{name: up}}
spec:
  provider: openai-compatible
  baseUrl: {fake_base_url}
  apiKey: {{secretKeyRef: {{name: keys, key: up}}}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ProviderSecret
metadata: {{name: up-wrong-key}}
spec:
  provider: openai-compatible
  baseUrl: {fake_base_url}
  apiKey: {{secretKeyRef: {{name: keys, key: wrong}}}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ProviderSecret
metadata: {{name: m}}
spec: {{provider: mock}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelRoute
metadata: {{name: chat}}
spec:
  targets:
  - {{name: fake, provider: up, model: {UPSTREAM_MODEL}}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelRoute
metadata: {{name: chat-mock}}
spec:
  targets:
  - {{name: mocked, provider: m, model: {MOCK_MODEL}}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelRoute
metadata: {{name: broken}}
spec:
  targets:
  - {{name: failing, provider: up, model: fail-500}}
  retry: {{attempts: 0}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelRoute
metadata: {{name: wrong-key}}
spec:
  targets:
  - {{name: locked-out, provider: up-wrong-key, model: {UPSTREAM_MODEL}}}
  retry: {{attempts: 0}}
---
{provider_manifests(fakes)}"""


# === Processes ===


class Process:
    """A child process whose stdout and stderr are drained by threads into memory.

    Draining keeps the child from ever blocking on a full pipe, and keeps its output for
    failure reports.
    """

    def __init__(self, name: str, argv: list[str], env: Optional[dict[str, str]] = None) -> None:
        self.name = name
        self.argv = argv
        self._cond = threading.Condition()
        self._lines: list[tuple[str, str]] = []  # (stream, line) in arrival order
        self._open_streams = 2
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )
        self._threads = [
            threading.Thread(target=self._drain, args=("stdout", self.popen.stdout), daemon=True),
            threading.Thread(target=self._drain, args=("stderr", self.popen.stderr), daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        _LIVE.append(self)

    def _drain(self, stream: str, pipe) -> None:
        try:
            for line in pipe:
                with self._cond:
                    self._lines.append((stream, line.rstrip("\n")))
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._open_streams -= 1
                self._cond.notify_all()

    def wait_for(self, stream: str, parse: Callable[[str], Optional[T]], what: str, timeout: float) -> T:
        """The first non-None ``parse(line)`` over ``stream``'s lines, waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                while seen < len(self._lines):
                    source, line = self._lines[seen]
                    seen += 1
                    if source == stream:
                        found = parse(line)
                        if found is not None:
                            return found
                if self._open_streams == 0:
                    raise StartupError(f"{self.name} exited (status {self.popen.wait()}) before {what}", self)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StartupError(f"{self.name} did not show {what} within {timeout:.0f}s", self)
                self._cond.wait(remaining)

    def exited(self) -> Optional[int]:
        return self.popen.poll()

    def output(self, last: int = 200) -> str:
        with self._cond:
            lines = self._lines[-last:]
        header = f"$ {' '.join(self.argv)}\n"
        return header + "\n".join(f"[{stream}] {line}" for stream, line in lines)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s; always reaps the child."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        for thread in self._threads:
            thread.join(timeout=2)
        if self in _LIVE:
            _LIVE.remove(self)


class StartupError(Exception):
    def __init__(self, message: str, process: Process) -> None:
        super().__init__(f"{message}\n--- {process.name} output ---\n{process.output()}")


#: Processes of the current stack, attached to the report of every failing test.
_LIVE: list[Process] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        for process in list(_LIVE):
            state = "running" if process.exited() is None else f"exited with {process.exited()}"
            report.sections.append((f"{process.name} ({state}) output", process.output()))
    return report


# === The stack ===


@dataclass
class Stack:
    #: Origin of the proxy's data port, e.g. ``http://127.0.0.1:41234``.
    base_url: str
    #: Origin of the proxy's admin port.
    admin_url: str
    #: The fake OpenAI upstream's base URL, ``http://127.0.0.1:PORT/v1``.
    fake_url: str
    #: Base URL of each fake by ``--provider``.
    fakes: dict[str, str]
    manifest_dir: Path
    #: The proxy process, for checks on its log.
    proxy: Process
    aliases: list[str] = field(default_factory=lambda: sorted(ROUTES))

    @property
    def v1(self) -> str:
        return f"{self.base_url}/v1"

    def access_log(self, request_id: str, timeout: float = 5.0) -> dict:
        """The proxy's JSON access log line of the request with this ``x-request-id``."""

        def parse(line: str) -> Optional[dict]:
            try:
                log = json.loads(line)
            except ValueError:
                return None
            if isinstance(log, dict) and log.get("request_id") == request_id and "status" in log:
                return log
            return None

        return self.proxy.wait_for("stderr", parse, f"the access log line of `{request_id}`", timeout)


def _require_binary(path: Path, var: str) -> str:
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(
            f"{path} is missing: build it with `cargo build -p proxy --features testing --bins` "
            f"or point {var} at it",
            pytrace=False,
        )
    return str(path)


def _fake_listening(line: str) -> Optional[str]:
    match = re.search(r"listening on (http://\S+)\s*$", line)
    return match.group(1) if match else None


def _proxy_listening(line: str) -> Optional[tuple[str, str]]:
    try:
        log = json.loads(line)
    except ValueError:
        return None
    if not isinstance(log, dict):
        return None
    fields = log.get("fields") if isinstance(log.get("fields"), dict) else log
    message = log.get("message", fields.get("message"))
    if message != "switchyard-proxy listening":
        return None
    return fields["listen"], fields["admin_listen"]


def _wait_ready(proxy: Process, admin_url: str, timeout: float) -> None:
    """Polls ``GET /readyz`` until it answers 200."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        if proxy.exited() is not None:
            raise StartupError(f"switchyard-proxy exited ({proxy.exited()}) before /readyz said 200", proxy)
        try:
            with urllib.request.urlopen(f"{admin_url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as error:
            last = f"HTTP {error.code}: {error.read()[:500]!r}"
        except (urllib.error.URLError, OSError) as error:
            last = repr(error)
        if time.monotonic() >= deadline:
            raise StartupError(f"/readyz not 200 within {timeout:.0f}s (last: {last})", proxy)
        time.sleep(0.05)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Stack:
    proxy_bin = _require_binary(PROXY_BIN, "SWITCHYARD_PROXY_BIN")
    fake_bin = _require_binary(FAKE_BIN, "FAKE_OPENAI_BIN")
    started: list[Process] = []
    try:
        fakes = {}
        for kind, key in FAKE_KEYS.items():
            fake = Process(
                f"fake-upstream --provider {kind}",
                [fake_bin, "--provider", kind, "--listen", "127.0.0.1:0", "--api-key", key, "--name", FAKE_NAME],
            )
            started.append(fake)
            fakes[kind] = fake.wait_for("stdout", _fake_listening, "`listening on BASE_URL`", STARTUP_TIMEOUT)
        fake_url = fakes["openai"]

        manifest_dir = tmp_path_factory.mktemp("manifests")
        (manifest_dir / "conformance.yaml").write_text(manifests(fakes))

        env = dict(os.environ, RUST_LOG=os.environ.get("SWITCHYARD_CONFORMANCE_RUST_LOG", "info"))
        proxy = Process(
            "switchyard-proxy",
            [
                proxy_bin,
                "--manifests", str(manifest_dir),
                "--listen", "127.0.0.1:0",
                "--admin-listen", "127.0.0.1:0",
                "--log-format", "json",
            ],
            env=env,
        )
        started.append(proxy)
        listen, admin_listen = proxy.wait_for(
            "stderr", _proxy_listening, "the `switchyard-proxy listening` log line", STARTUP_TIMEOUT
        )
        admin_url = f"http://{admin_listen}"
        _wait_ready(proxy, admin_url, STARTUP_TIMEOUT)
    except StartupError as error:
        for process in reversed(started):
            process.stop()
        pytest.fail(str(error), pytrace=False)
    except BaseException:
        for process in reversed(started):
            process.stop()
        raise

    yield Stack(
        base_url=f"http://{listen}",
        admin_url=admin_url,
        fake_url=fake_url,
        fakes=fakes,
        manifest_dir=manifest_dir,
        proxy=proxy,
    )

    crashed = [(p, p.exited()) for p in started if p.exited() is not None]
    for process in reversed(started):
        process.stop()
    if crashed:
        details = "\n".join(f"--- {p.name} exited with {code} ---\n{p.output()}" for p, code in crashed)
        pytest.fail(f"a process of the stack died during the tests:\n{details}", pytrace=False)


@pytest.fixture
def client(stack: Stack):
    """The official SDK pointed at the proxy; the client's own key is irrelevant to the proxy."""
    with openai.OpenAI(base_url=stack.v1, api_key="unused", max_retries=0, timeout=REQUEST_TIMEOUT) as sdk:
        yield sdk
