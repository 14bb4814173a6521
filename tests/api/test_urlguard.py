"""The webhook SSRF guard (urlguard, addresses) and the pinned transport: which URLs are
refused, the allow-list, and with real local HTTP(S) receivers that a delivery
connects to the vetted address only (DNS rebinding), keeps the Host header and TLS
server name, and never follows a redirect."""

from __future__ import annotations

import datetime
import ssl
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address, ip_network
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy import text

from taskhub_api.addresses import IPNetwork
from taskhub_api.db import Database
from taskhub_api.jobs.ledger import JobContext
from taskhub_api.settings import Settings, WebhookSettings
from taskhub_api.webhooks.jobs import DeliveryFailed, deliver, delivery_id, delivery_job, send
from taskhub_api.webhooks.transport import PinnedTransport, default_ssl_context
from taskhub_api.webhooks.urlguard import UnsafeUrl, check_url
from tests.support.users import NewUser, create_task

PUBLIC = "93.184.216.34"
LOOPBACK = [ip_network("127.0.0.0/8"), ip_network("::1/128")]


class FakeDns:
    """A resolver with fixed answers per name; ``then`` answers every later lookup
    (a rebinding name). Records every lookup."""

    def __init__(self, answers: dict[str, list[str]], then: dict[str, list[str]] | None = None):
        self.answers = answers
        self.then = then or {}
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        host = host.rstrip(".")  # as DNS does
        first = host not in self.lookups
        self.lookups.append(host)
        table = self.answers if first or host not in self.then else self.then
        if host not in table:
            raise OSError(f"NXDOMAIN {host}")
        return table[host]


DNS = FakeDns(
    {
        "public.example": [PUBLIC],
        "two.example": [PUBLIC, "2606:2800:220:1:248:1893:25c8:1946"],
        "mixed.example": [PUBLIC, "10.0.0.7"],
        "mixed6.example": ["2606:2800:220:1:248:1893:25c8:1946", "::1"],
        "metadata.example": ["169.254.169.254"],
        "mapped.example": ["::ffff:127.0.0.1"],
        "localhost": ["127.0.0.1", "::1"],
        "empty.example": [],
    }
)


async def refused(url: str, allowed: Sequence[IPNetwork] = ()) -> str:
    with pytest.raises(UnsafeUrl) as caught:
        await check_url(url, allowed_networks=allowed, resolver=DNS)
    return str(caught.value)


class TestRefusedUrls:
    @pytest.mark.parametrize(
        ("url", "reason"),
        [
            # IPv4 special-purpose ranges
            ("http://127.0.0.1/hook", "loopback"),
            ("http://10.1.2.3/hook", "private"),
            ("http://172.16.5.4/hook", "private"),
            ("http://192.168.0.10/hook", "private"),
            ("http://100.64.0.1/hook", "CGNAT"),
            ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
            ("http://169.254.1.1/", "link-local"),
            ("http://100.100.100.200/", "Alibaba"),
            ("http://168.63.129.16/", "Azure"),
            ("http://0.0.0.0/hook", "unspecified"),
            ("http://224.0.0.1/", "multicast"),
            ("http://255.255.255.255/", "broadcast"),
            ("http://192.0.2.1/", "internal address"),
            # IPv6
            ("http://[::1]/hook", "loopback"),
            ("http://[::]/hook", "unspecified"),
            ("http://[fe80::1]/", "link-local"),
            ("http://[fec0::1]/", "site-local"),
            ("http://[fd12:3456::1]/", "private"),
            ("http://[fd00:ec2::254]/hook", "AWS"),
            ("http://[ff02::1]/", "multicast"),
            ("http://[2001:db8::1]/", "internal address"),
            # IPv4 inside IPv6, each form
            ("http://[::ffff:10.0.0.1]/hook", "private"),
            ("http://[::ffff:127.0.0.1]/", "loopback"),
            ("http://[::ffff:169.254.169.254]/", "cloud metadata"),
            ("http://[::ffff:0:127.0.0.1]/", "IPv4-translated form of 127.0.0.1"),
            ("http://[::127.0.0.1]/", "IPv4-compatible form of 127.0.0.1"),
            ("http://[64:ff9b::7f00:1]/", "NAT64 form of 127.0.0.1"),
            ("http://[64:ff9b::a9fe:a9fe]/", "NAT64 form of 169.254.169.254"),
            ("http://[64:ff9b:1::a00:1]/", "NAT64 form of 10.0.0.1"),
            ("http://[2002:7f00:1::1]/", "6to4 form of 127.0.0.1"),
            ("http://[2002:a9fe:a9fe::]/", "6to4 form of 169.254.169.254"),
            ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", "Teredo form of 127.0.0.1"),
            # The prefixes themselves, even around a public IPv4 address
            ("http://[64:ff9b::5db8:d822]/", "NAT64 form of 93.184.216.34"),
            ("http://[2002:5db8:d822::1]/", "6to4 form of 93.184.216.34"),
            ("http://[2001:0:4136:e378:8000:63bf:a247:27dd]/", "Teredo form of 93.184.216.34"),
            # Names resolving to internal addresses, or to one among public ones
            ("http://localhost/hook", "loopback"),
            ("http://metadata.example/", "cloud metadata"),
            ("http://mixed.example/", "10.0.0.7: private"),
            ("http://mixed6.example/", "::1: loopback"),
            ("http://mapped.example/", "127.0.0.1"),
        ],
    )
    async def test_internal_targets(self, url: str, reason: str) -> None:
        message = await refused(url)
        assert "internal address" in message
        assert reason in message

    @pytest.mark.parametrize(
        "url",
        [
            "http://2130706433/",  # decimal
            "http://0177.0.0.1/",  # octal
            "http://0x7f000001/",  # hex
            "http://0x7f.0.0.1/",
            "http://127.1/",  # short
            "http://127.0.1/",
            "http://010.0.0.1/",
            "http://127.0.0.1./",  # trailing dot
            "http://1.2.3.4.5/",
            "http://93.184.216.034/",  # even for a public address
        ],
    )
    async def test_non_canonical_numeric_hosts(self, url: str) -> None:
        assert "non-canonical numeric host" in await refused(url)

    @pytest.mark.parametrize(
        ("url", "reason"),
        [
            ("http://evil.com@127.0.0.1/", "credentials"),
            ("http://user:pw@public.example/", "credentials"),
            ("http://public.example@public.example/", "credentials"),
            ("http://evil.com\\@127.0.0.1/", "backslash"),
            ("http://127.0.0.1\\@public.example/", "backslash"),
            ("http://public.example\\.127.0.0.1/", "backslash"),
            ("http://public.example /", "printable ASCII"),
            ("http://public.example\t/", "printable ASCII"),
            ("http://public.exa\nmple/", "printable ASCII"),
            ("ftp://93.184.216.34/x", "http or https"),
            ("file:///etc/passwd", "http or https"),
            ("gopher://127.0.0.1:6379/_INFO", "http or https"),
            ("http:///nohost", "http or https"),
            ("http://public.example:99999/", "invalid port"),
            ("http://public.example:0/", "invalid port"),
            ("http://[fe80::1%25eth0]/", "zone identifier"),
            ("http://nxdomain.example/", "cannot be resolved"),
            ("http://empty.example/", "cannot be resolved"),
            ("http://bad_-.example/", "neither an IP address nor a DNS name"),
            ("http://-bad.example/", "neither an IP address nor a DNS name"),
        ],
    )
    async def test_malformed_or_ambiguous_urls(self, url: str, reason: str) -> None:
        assert reason in await refused(url)

    async def test_a_fragment_cannot_smuggle_another_host(self) -> None:
        # Both parsers read host 127.0.0.1 here; that is the host that is judged.
        assert "loopback" in await refused("http://127.0.0.1#@public.example/")
        target = await check_url("http://public.example/#@127.0.0.1", resolver=DNS)
        assert target.host == "public.example"


class TestAcceptedUrls:
    @pytest.mark.parametrize(
        ("url", "host", "port", "addresses"),
        [
            ("https://93.184.216.34/hooks/taskhub", "93.184.216.34", 443, [PUBLIC]),
            ("http://public.example:8080/x?y=1", "public.example", 8080, [PUBLIC]),
            ("https://PUBLIC.example./x", "public.example.", 443, [PUBLIC]),
            (
                "https://two.example/",
                "two.example",
                443,
                [PUBLIC, "2606:2800:220:1:248:1893:25c8:1946"],
            ),
            # IPv4-mapped: judged, and connected to, as the IPv4 address
            ("http://[::ffff:93.184.216.34]/", "::ffff:93.184.216.34", 80, [PUBLIC]),
        ],
    )
    async def test_public_targets(
        self, url: str, host: str, port: int, addresses: list[str]
    ) -> None:
        target = await check_url(url, resolver=DNS)
        assert (target.host, target.port) == (host, port)
        assert [str(a) for a in target.addresses] == addresses

    @pytest.mark.parametrize(
        "url",
        [
            "http://127.0.0.1:9/hook",
            "http://localhost:9/hook",
            "http://[::1]:9/hook",
            "http://[::ffff:127.0.0.1]:9/hook",
        ],
    )
    async def test_allowed_networks_admit_their_addresses(self, url: str) -> None:
        target = await check_url(url, allowed_networks=LOOPBACK, resolver=DNS)
        assert all(a.is_loopback for a in target.addresses)

    @pytest.mark.parametrize(
        ("url", "reason"),
        [
            ("http://169.254.169.254/", "cloud metadata"),
            ("http://169.254.170.2/", "ECS"),
            ("http://100.100.100.200/", "Alibaba"),
            ("http://[fd00:ec2::254]/", "AWS"),
            ("http://[fe80::1]/", "link-local"),
            ("http://0.0.0.0/", "unspecified"),
            ("http://[64:ff9b::a00:1]/", "NAT64"),
            ("http://[::ffff:169.254.169.254]/", "cloud metadata"),
        ],
    )
    async def test_the_allow_list_never_opens_metadata_or_link_local(
        self, url: str, reason: str
    ) -> None:
        # Wider than settings validation lets through: the check itself holds too.
        everything = [ip_network("0.0.0.0/0"), ip_network("::/0")]
        assert reason in await refused(url, everything)

    async def test_the_allow_list_opens_only_what_it_lists(self) -> None:
        allowed = [ip_network("10.20.0.0/16")]
        target = await check_url("http://10.20.3.4/", allowed_networks=allowed)
        assert target.addresses == (IPv4Address("10.20.3.4"),)
        assert "private" in await refused("http://10.21.0.1/", allowed)
        assert "loopback" in await refused("http://127.0.0.1/", allowed)


class TestAllowListSetting:
    def test_environment_form(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TASKHUB_WEBHOOKS__ALLOWED_NETWORKS", '["127.0.0.0/8","::1/128"]')
        assert Settings().webhooks.allowed_networks == LOOPBACK
        assert WebhookSettings().allowed_networks == []

    @pytest.mark.parametrize(
        ("network", "reason"),
        [
            ("169.254.0.0/16", "169.254.169.254/32 (cloud metadata service)"),
            ("169.254.169.254/32", "cloud metadata"),
            ("100.64.0.0/10", "100.100.100.200/32"),
            ("fd00::/8", "fd00:ec2::/32"),
            ("fe80::/64", "link-local"),
            ("0.0.0.0/0", "never allowed"),
            ("::/0", "::/96"),
            ("64:ff9b::/96", "NAT64"),
            ("::ffff:127.0.0.0/104", "IPv4-mapped"),
        ],
    )
    def test_entries_overlapping_never_allowed_ranges_are_rejected(
        self, network: str, reason: str
    ) -> None:
        with pytest.raises(ValidationError) as caught:
            WebhookSettings(allowed_networks=[network])  # type: ignore[list-item]
        assert reason in str(caught.value)

    def test_host_bits_are_rejected(self) -> None:
        with pytest.raises(ValidationError):
            WebhookSettings(allowed_networks=["10.0.0.1/8"])  # type: ignore[list-item]

    def test_the_old_switch_is_gone(self) -> None:
        assert "allow_private_networks" not in WebhookSettings.model_fields


# Real receivers


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class Receiver:
    host: str
    port: int
    hits: list[Hit] = field(default_factory=list)
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    sni: list[str | None] = field(default_factory=list)


def serve(state: Receiver, tls: ssl.SSLContext | None = None) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            state.hits.append(Hit(self.path, headers, body))
            self.send_response(state.status)
            for name, value in state.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((state.host, state.port), Handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    state.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def pair() -> Iterator[tuple[Receiver, Receiver]]:
    """Two receivers on one port: the vetted one on 127.0.0.2 and an "internal" one on
    127.0.0.1, where a connection that re-resolved ``localhost`` would land."""
    servers: list[ThreadingHTTPServer] = []
    for _ in range(20):
        vetted = Receiver("127.0.0.2", 0)
        servers = [serve(vetted)]
        internal = Receiver("127.0.0.1", vetted.port)
        try:
            servers.append(serve(internal))
            break
        except OSError:
            servers[0].shutdown()
            servers[0].server_close()
    else:
        pytest.fail("no port free on both 127.0.0.1 and 127.0.0.2")
    try:
        yield vetted, internal
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


class RecordingBackend(httpcore.AsyncNetworkBackend):
    """Where the transport dials; refuses every connection (no internet in tests)."""

    def __init__(self) -> None:
        self.dialled: list[tuple[str, int]] = []

    async def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        self.dialled.append((host, port))
        raise httpcore.ConnectError(f"test: not dialling {host}")

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> Any:
        raise httpcore.ConnectError("test")

    async def sleep(self, seconds: float) -> None:
        pass


SETTINGS = WebhookSettings(timeout=5)
BODY, HEADERS = b'{"ok":true}', {"Content-Type": "application/json"}


class TestPinnedConnection:
    async def test_a_rebinding_name_is_connected_to_the_vetted_address(
        self, pair: tuple[Receiver, Receiver]
    ) -> None:
        vetted, internal = pair
        # Check time: the vetted (allowed) address; every later lookup, and the
        # system's own resolution of localhost: 127.0.0.1.
        dns = FakeDns({"localhost": ["127.0.0.2"]}, then={"localhost": ["127.0.0.1"]})
        settings = WebhookSettings(allowed_networks=[ip_network("127.0.0.2/32")], timeout=5)
        url = f"http://localhost:{vetted.port}/rebind"
        status, error = await send(settings, url, BODY, HEADERS, resolver=dns)
        assert (status, error) == (200, None)
        assert [h.path for h in vetted.hits] == ["/rebind"]
        assert vetted.hits[0].headers["host"] == f"localhost:{vetted.port}"
        assert internal.hits == []
        assert dns.lookups == ["localhost"]  # resolved once, at the check
        # The next delivery resolves again and now meets loopback: refused.
        status, error = await send(settings, url, BODY, HEADERS, resolver=dns)
        assert status is None and error is not None and "127.0.0.1: loopback" in error
        assert internal.hits == []

    async def test_a_public_answer_then_loopback_dials_only_the_public_address(
        self, pair: tuple[Receiver, Receiver]
    ) -> None:
        _, internal = pair
        dns = FakeDns({"localhost": [PUBLIC]}, then={"localhost": ["127.0.0.1"]})
        target = await check_url(f"http://localhost:{internal.port}/x", resolver=dns)
        backend = RecordingBackend()
        async with httpx.AsyncClient(transport=PinnedTransport(target, backend=backend)) as c:
            with pytest.raises(httpx.ConnectError):
                await c.post(target.url, content=BODY)
        assert backend.dialled == [(PUBLIC, internal.port)]
        assert internal.hits == []

    async def test_the_transport_refuses_any_other_host(self) -> None:
        target = await check_url("http://public.example/", resolver=DNS)
        backend = RecordingBackend()
        async with httpx.AsyncClient(transport=PinnedTransport(target, backend=backend)) as c:
            with pytest.raises(httpx.ConnectError, match="not the vetted"):
                await c.post("http://127.0.0.1/", content=BODY)
        assert backend.dialled == []

    async def test_every_vetted_address_is_tried_in_order(self) -> None:
        target = await check_url("http://two.example/", resolver=DNS)
        backend = RecordingBackend()
        async with httpx.AsyncClient(transport=PinnedTransport(target, backend=backend)) as c:
            with pytest.raises(httpx.ConnectError):
                await c.post(target.url, content=BODY)
        assert [a for a, _ in backend.dialled] == [PUBLIC, "2606:2800:220:1:248:1893:25c8:1946"]

    async def test_redirects_are_not_followed(self, pair: tuple[Receiver, Receiver]) -> None:
        vetted, internal = pair
        vetted.status = 302
        vetted.headers = {"Location": f"http://127.0.0.1:{internal.port}/internal"}
        # Even with the redirect's target inside the allow-list.
        settings = WebhookSettings(allowed_networks=LOOPBACK, timeout=5)
        status, error = await send(settings, f"http://127.0.0.2:{vetted.port}/moved", BODY, HEADERS)
        assert (status, error) == (302, "HTTP 302")
        assert len(vetted.hits) == 1 and internal.hits == []


def _certificate(tmp_path: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A CA and a server certificate for ``name``: (server context, client context)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "TaskHub test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    return server, client


class TestTls:
    @pytest.fixture
    def https(self, tmp_path: Path) -> Iterator[tuple[Receiver, ssl.SSLContext]]:
        server_ctx, client_ctx = _certificate(tmp_path, "hooks.example.test")
        state = Receiver("127.0.0.2", 0)
        server_ctx.sni_callback = lambda sock, name, ctx: state.sni.append(name)  # type: ignore[assignment, misc]
        server = serve(state, server_ctx)
        try:
            yield state, client_ctx
        finally:
            server.shutdown()
            server.server_close()

    async def test_sni_and_certificate_check_use_the_host_name(
        self, https: tuple[Receiver, ssl.SSLContext]
    ) -> None:
        state, client_ctx = https
        dns = FakeDns({"hooks.example.test": ["127.0.0.2"]})
        settings = WebhookSettings(allowed_networks=[ip_network("127.0.0.2/32")], timeout=5)
        url = f"https://hooks.example.test:{state.port}/tls"
        status, error = await send(
            settings, url, BODY, HEADERS, resolver=dns, ssl_context=client_ctx
        )
        assert (status, error) == (200, None)
        assert state.sni == ["hooks.example.test"]
        assert state.hits[0].headers["host"] == f"hooks.example.test:{state.port}"

    async def test_a_certificate_for_another_name_fails(
        self, https: tuple[Receiver, ssl.SSLContext]
    ) -> None:
        state, client_ctx = https
        dns = FakeDns({"other.example.test": ["127.0.0.2"]})
        settings = WebhookSettings(allowed_networks=[ip_network("127.0.0.2/32")], timeout=5)
        url = f"https://other.example.test:{state.port}/tls"
        status, error = await send(
            settings, url, BODY, HEADERS, resolver=dns, ssl_context=client_ctx
        )
        assert status is None and error is not None
        assert "CERTIFICATE_VERIFY_FAILED" in error or "certificate" in error.lower()
        assert state.hits == []

    async def test_the_shared_default_context_still_checks_certificates(
        self, https: tuple[Receiver, ssl.SSLContext]
    ) -> None:
        # Built once per process (it loads the CA bundle), and as strict as httpx's.
        context = default_ssl_context()
        assert default_ssl_context() is context
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        state, _ = https
        dns = FakeDns({"hooks.example.test": ["127.0.0.2"]})
        settings = WebhookSettings(allowed_networks=[ip_network("127.0.0.2/32")], timeout=5)
        url = f"https://hooks.example.test:{state.port}/tls"
        for _ in range(2):  # the second delivery reuses the context
            status, error = await send(settings, url, BODY, HEADERS, resolver=dns)
            assert status is None and error is not None
            assert "CERTIFICATE_VERIFY_FAILED" in error  # a private CA: not trusted
        assert state.hits == []


class TestDeliveryJob:
    async def test_a_redirect_to_an_internal_address_is_recorded_as_a_failure(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        new_user: NewUser,
        pair: tuple[Receiver, Receiver],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        vetted, internal = pair
        vetted.status = 302
        vetted.headers = {"Location": f"http://127.0.0.1:{internal.port}/internal"}
        monkeypatch.setattr(app.state.settings.webhooks, "allowed_networks", LOOPBACK)
        owner = await new_user()
        created = await client.post(
            "/api/v1/webhooks",
            json={"url": f"http://127.0.0.2:{vetted.port}/moved", "events": ["task.created"]},
            headers=owner.headers,
        )
        assert created.status_code == 201, created.text
        hook_id = uuid.UUID(created.json()["id"])
        task = await create_task(client, owner)
        db: Database = app.state.db
        async with db.transaction() as session:
            event_id = (
                await session.execute(
                    text("SELECT id FROM event WHERE aggregate_id = :id"),
                    {"id": uuid.UUID(task["id"])},
                )
            ).scalar_one()
        job = delivery_job(hook_id, event_id)
        context = JobContext(settings=app.state.settings, db=db)
        with pytest.raises(DeliveryFailed, match="HTTP 302"):
            await deliver(context, job_key=job.key, **job.kwargs)
        async with db.transaction() as session:
            row = (
                await session.execute(
                    text(
                        "SELECT d.status, a.response_status, a.error FROM webhook_delivery d "
                        "JOIN webhook_attempt a ON a.delivery_id = d.id WHERE d.id = :id"
                    ),
                    {"id": delivery_id(hook_id, event_id)},
                )
            ).one()
        assert tuple(row) == ("failed", 302, "HTTP 302")
        assert len(vetted.hits) == 1 and internal.hits == []
