"""A listener on a real socket standing for a service the functions must never reach (a database, an admin port,
a metadata endpoint), or for a server that answers what a test scripts: it records every connection made to it.

Plain TCP or TLS (a self-signed certificate; the server records the name the client asked for, SNI, even when the
client then refuses the certificate).
"""

from __future__ import annotations

import datetime
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# What the listener does once a client connected: send these bytes after reading the request head, or (None) hang
# up at once without reading anything.
Answer = bytes | None


def http_answer(status: int, body: bytes | str, content_type: str = "text/plain") -> bytes:
    data = body.encode() if isinstance(body, str) else body
    head = (f"HTTP/1.1 {status} Whatever\r\ncontent-type: {content_type}\r\ncontent-length: {len(data)}\r\n"
            f"connection: close\r\n\r\n")
    return head.encode() + data


@dataclass
class Connection:
    received: bytes = b""
    server_name: str | None = None  # the SNI of a TLS client


@dataclass
class InternalService:
    host: str
    port: int
    answer: Answer
    tls: bool
    connections: list[Connection] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, host: str | None = None, scheme: str | None = None) -> str:
        host = host or (f"[{self.host}]" if ":" in self.host else self.host)
        return f"{scheme or ('https' if self.tls else 'http')}://{host}:{self.port}"

    @property
    def reached(self) -> int:
        with self.lock:
            return len(self.connections)

    def heads(self) -> list[bytes]:
        with self.lock:
            return [connection.received for connection in self.connections]


@contextmanager
def internal_service(answer: Answer = b"", *, host: str = "127.0.0.1", port: int = 0,
                     tls: bool = False) -> Iterator[InternalService]:
    """Listening on `host` ("::" listens on every address of the machine, IPv6 and IPv4, like a service bound to
    all interfaces) until the block ends."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if host == "::":
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    listener.bind((host, port))
    listener.listen(64)
    listener.settimeout(0.2)
    service = InternalService(host=host, port=listener.getsockname()[1], answer=answer, tls=tls)
    stop = threading.Event()

    def serve(client: socket.socket) -> None:
        connection = Connection()
        with service.lock:
            service.connections.append(connection)
        try:
            if service.answer is None:
                return
            client.settimeout(5.0)
            if tls:
                context = _server_tls_context()

                def record_name(sock: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
                    connection.server_name = name

                context.sni_callback = record_name  # type: ignore[assignment]
                client = context.wrap_socket(client, server_side=True)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = client.recv(4096)
                if not chunk:
                    break
                head += chunk
            connection.received = head
            client.sendall(service.answer)
        except OSError:  # the client hung up, or refused our certificate (ssl.SSLError is an OSError)
            pass
        finally:
            client.close()

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(client,), daemon=True).start()

    thread = threading.Thread(target=accept, name=f"internal-service-{service.port}", daemon=True)
    thread.start()
    try:
        yield service
    finally:
        stop.set()
        thread.join(5)
        listener.close()


@cache
def _certificate_files() -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "internal.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=2))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName("internal.test")]), critical=False)
                   .sign(key, hashes.SHA256()))
    directory = Path(tempfile.mkdtemp(prefix="internal-service-"))
    (directory / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    return str(directory / "cert.pem"), str(directory / "key.pem")


def _server_tls_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*_certificate_files())
    return context
