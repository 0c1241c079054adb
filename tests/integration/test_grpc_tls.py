"""TLS and mutual TLS on a real push server: certificates made by the test, with its own CA."""

from __future__ import annotations

import datetime
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from common.grpc_security import secure_channel
from push_service.config import PushSettings
from push_service.server import start_push_server
from pushclient import PublishError, PushClient


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(subject: str, issuer_key, issuer_name, *, ca: bool, key=None, san: str | None = None):  # type: ignore[no-untyped-def]
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name or _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
    return key, builder.sign(issuer_key or key, hashes.SHA256())


def _write(directory: Path, name: str, key, cert) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = _issue("test CA", None, None, ca=True)
    server_key, server_cert = _issue("localhost", ca_key, ca_cert.subject, ca=False, san="localhost")
    client_key, client_cert = _issue("edge", ca_key, ca_cert.subject, ca=False)
    ca_path, _ = _write(directory, "ca", ca_key, ca_cert)
    server_crt, server_key_path = _write(directory, "server", server_key, server_cert)
    client_crt, client_key_path = _write(directory, "client", client_key, client_cert)
    return {"ca": ca_path, "server_crt": server_crt, "server_key": server_key_path, "client_crt": client_crt,
            "client_key": client_key_path}


async def test_tls_publish_works_and_plaintext_is_refused(pki: dict[str, Path]):
    running = await start_push_server(PushSettings(host="localhost", port=0, metrics_port=0, tls_cert_file=pki["server_crt"],
                                                   tls_key_file=pki["server_key"]))
    try:
        async with PushClient(f"localhost:{running.port}", tls_ca_file=pki["ca"], timeout=5) as client:
            assert (await client.publish("tls", "t", {"ok": True})).id
        async with PushClient(f"localhost:{running.port}", timeout=2) as plaintext:
            with pytest.raises(PublishError) as refused:
                await plaintext.publish("tls", "t", {})
            assert refused.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        await running.stop(0)


async def test_mutual_tls_requires_a_client_certificate(pki: dict[str, Path]):
    running = await start_push_server(PushSettings(host="localhost", port=0, metrics_port=0, tls_cert_file=pki["server_crt"],
                                                   tls_key_file=pki["server_key"], tls_client_ca_file=pki["ca"]))
    address = f"localhost:{running.port}"
    try:
        from push.v1 import push_service_pb2 as pb
        from push.v1 import push_service_pb2_grpc as pb_grpc

        request = pb.PublishRequest(message=pb.OutgoingMessage(topic="mtls", type="t"))
        async with PushClient(address, tls_ca_file=pki["ca"], tls_cert_file=pki["client_crt"],
                              tls_key_file=pki["client_key"]) as client:
            assert (await client.publish("mtls", "t", {})).id
        async with secure_channel(address, ca_file=pki["ca"], cert_file=pki["client_crt"],
                                  key_file=pki["client_key"]) as channel:
            assert (await pb_grpc.PushServiceStub(channel).Publish(request, timeout=5)).id
        async with secure_channel(address, ca_file=pki["ca"]) as channel:  # no client certificate
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await pb_grpc.PushServiceStub(channel).Publish(request, timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await running.stop(0)


async def test_a_list_of_replica_ip_addresses_verifies_the_certificates_name(pki: dict[str, Path]):
    """Replicas named by IP (`127.0.0.1:a,127.0.0.1:b`) present a certificate for `localhost`: the
    client checks that name when told it (`tls_server_name`), and refuses without it."""
    replicas = [await start_push_server(PushSettings(host="127.0.0.1", port=0, metrics_port=0,
                                                     tls_cert_file=pki["server_crt"], tls_key_file=pki["server_key"]))
                for _ in range(2)]
    addresses = ",".join(f"127.0.0.1:{r.port}" for r in replicas)
    try:
        async with PushClient(addresses, tls_ca_file=pki["ca"], tls_server_name="localhost", timeout=5) as client:
            for n in range(4):  # spread over the replicas by round_robin; each connection verified
                assert (await client.publish("tls:list", "t", {"n": n})).id
        async with PushClient(addresses, tls_ca_file=pki["ca"], timeout=2) as unnamed:
            with pytest.raises(PublishError) as refused:
                await unnamed.publish("tls:list", "t", {})
            assert refused.value.code == grpc.StatusCode.UNAVAILABLE
        async with PushClient(addresses, tls_ca_file=pki["ca"], tls_server_name="not-localhost", timeout=2) as wrong:
            with pytest.raises(PublishError) as refused:
                await wrong.publish("tls:list", "t", {})
            assert refused.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        for replica in replicas:
            await replica.stop(0)
