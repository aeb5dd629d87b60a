"""--ssl_config_file: TLS and mutual TLS with TF Serving's own client, certificates reloaded.

The CAs and certificates are made here. One server requires client
certificates (mTLS) on its TCP port and Unix socket, with HTTPS on REST and
certificate reloads on; the other serves TLS without client certificates and
keeps REST plaintext, as TF Serving does.
"""

from __future__ import annotations

import datetime
import ipaddress
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import requests
import tensorflow as tf
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.protobuf import text_format
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from onnx_serving.protos.tensorflow_serving.config import ssl_config_pb2
from tests.models import EXAMPLES
from tests.server_process import ServerProcess, free_port

MODEL = f"--model_base_path={EXAMPLES / 'models/half_plus_two'}"
TIMEOUT = 10


@dataclass(frozen=True)
class Pem:
    key: bytes
    cert: bytes


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_ca(common: str) -> tuple[Pem, ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(_name(common)).issuer_name(_name(common))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return _pem(key, cert), key, cert


def issue(ca: tuple[Pem, ec.EllipticCurvePrivateKey, x509.Certificate], common: str,
          *, server: bool) -> Pem:
    _, ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder().subject_name(_name(common)).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
        ), critical=False)
    )
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        ), critical=False)
    return _pem(key, builder.sign(ca_key, hashes.SHA256()))


def _pem(key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> Pem:
    return Pem(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption()),
        cert.public_bytes(serialization.Encoding.PEM),
    )


def ssl_config(server: Pem, ca: Pem | None, client_verify: bool) -> str:
    """TF Serving's SSLConfig text, the PEM blocks inline."""
    return text_format.MessageToString(ssl_config_pb2.SSLConfig(
        server_key=server.key.decode(), server_cert=server.cert.decode(),
        custom_ca=ca.cert.decode() if ca else "", client_verify=client_verify,
    ))


@dataclass
class Pki:
    ca: Pem
    server: Pem
    client: Pem
    other_ca: Pem
    other_client: Pem  # signed by other_ca
    next_ca: Pem  # the reload's
    next_server: Pem
    next_client: Pem
    folder: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca, other, rotated = make_ca("test CA"), make_ca("other CA"), make_ca("next CA")
    folder = tmp_path_factory.mktemp("pki")
    pki = Pki(ca[0], issue(ca, "server", server=True), issue(ca, "client", server=False),
              other[0], issue(other, "client", server=False), rotated[0],
              issue(rotated, "server", server=True), issue(rotated, "client", server=False),
              folder)
    for name in ("ca", "other_ca", "next_ca"):
        (folder / f"{name}.pem").write_bytes(getattr(pki, name).cert)
    for name in ("client", "next_client"):
        (folder / f"{name}.key").write_bytes(getattr(pki, name).key)
        (folder / f"{name}.pem").write_bytes(getattr(pki, name).cert)
    return pki


def credentials(ca: Pem, client: Pem | None = None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=ca.cert,
        private_key=client.key if client else None,
        certificate_chain=client.cert if client else None,
    )


def predict(channel: grpc.Channel) -> float:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([2.0]))
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return float(stub.Predict(request, timeout=TIMEOUT).outputs["y"].float_val[0])


def refused(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as info, channel:
        predict(channel)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


@dataclass
class Mtls:
    server: ServerProcess
    rest_port: int
    socket: Path
    config: Path


@pytest.fixture(scope="module")
def mtls(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mtls]:
    tmp = tmp_path_factory.mktemp("mtls")
    config = tmp / "ssl.config"
    config.write_text(ssl_config(pki.server, pki.ca, client_verify=True))
    socket, rest_port = tmp / "grpc.sock", free_port()
    server = ServerProcess(
        [MODEL, f"--ssl_config_file={config}", f"--grpc_socket_path={socket}",
         f"--rest_api_port={rest_port}", "--rest_api_enable_ssl",
         "--ssl_config_file_poll_wait_seconds=1"],
        tmp / "server.log", credentials=credentials(pki.ca, pki.client),
    ).start()
    yield Mtls(server, rest_port, socket, config)
    server.stop()


def test_mtls_predict_on_the_port_and_the_socket(mtls: Mtls, pki: Pki) -> None:
    with mtls.server.channel() as channel:
        assert predict(channel) == 3.0
    with grpc.secure_channel(f"unix:{mtls.socket}", credentials(pki.ca, pki.client),
                             options=[("grpc.ssl_target_name_override", "localhost")]) as channel:
        assert predict(channel) == 3.0


def test_mtls_refuses_plaintext_wrong_ca_and_missing_or_foreign_client_cert(
    mtls: Mtls, pki: Pki
) -> None:
    address = mtls.server.address
    refused(grpc.insecure_channel(address))
    refused(grpc.secure_channel(address, credentials(pki.other_ca, pki.client)))  # wrong CA
    refused(grpc.secure_channel(address, credentials(pki.ca)))  # no client certificate
    refused(grpc.secure_channel(address, credentials(pki.ca, pki.other_client)))


def test_rest_over_https_with_client_certificates(mtls: Mtls, pki: Pki) -> None:
    url = f"https://127.0.0.1:{mtls.rest_port}/v1/models/default:predict"
    client = (str(pki.folder / "client.pem"), str(pki.folder / "client.key"))
    response = requests.post(url, json={"instances": [2.0]}, verify=pki.folder / "ca.pem",
                             cert=client, timeout=TIMEOUT)
    assert response.json() == {"predictions": [3.0]}
    # Without a client certificate: refused. Under TLS 1.3 the server checks it after the
    # client's side of the handshake is done, so the client sees the server's alert
    # (SSLError) or, when the close comes first, the connection dropped unanswered.
    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
        requests.post(url, json={"instances": [2.0]}, verify=pki.folder / "ca.pem",
                      timeout=TIMEOUT)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(url.replace("https", "http"), json={"instances": [2.0]}, timeout=TIMEOUT)


def test_certificates_reload_without_restart(mtls: Mtls, pki: Pki) -> None:
    """Runs last in this module: it leaves the server on the next CA."""
    old = credentials(pki.ca, pki.client)
    deadline = time.monotonic() + 20
    # Invalid, not UTF-8, a key under a passphrase: each ignored and logged, and polling
    # goes on (a rotation after them still applies, below).
    for count, bad in enumerate((b"server_key: 'not a key'", b"\xff\xfe not text",
                                 encrypted_key_config(pki).encode()), start=1):
        mtls.config.write_bytes(bad)
        while mtls.server.logs().count("SSL config not reloaded") < count:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        with grpc.secure_channel(mtls.server.address, old) as channel:
            assert predict(channel) == 3.0
    assert "passphrase" in mtls.server.logs() and "Traceback" not in mtls.server.logs()

    mtls.config.write_text(ssl_config(pki.next_server, pki.next_ca, client_verify=True))
    new = credentials(pki.next_ca, pki.next_client)
    while True:  # new connections get the new certificates within a poll
        with grpc.secure_channel(mtls.server.address, new) as channel:
            try:
                assert predict(channel) == 3.0
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline + 20
                time.sleep(0.2)
    refused(grpc.secure_channel(mtls.server.address, old))
    response = requests.post(
        f"https://127.0.0.1:{mtls.rest_port}/v1/models/default:predict",
        json={"instances": [2.0]}, verify=pki.folder / "next_ca.pem",
        cert=(str(pki.folder / "next_client.pem"), str(pki.folder / "next_client.key")),
        timeout=TIMEOUT,
    )
    assert response.json() == {"predictions": [3.0]}


def test_tls_without_client_certificates_and_plaintext_rest(
    pki: Pki, tmp_path: Path
) -> None:
    config = tmp_path / "ssl.config"
    config.write_text(ssl_config(pki.server, None, client_verify=False))
    rest_port = free_port()
    server = ServerProcess(
        [MODEL, f"--ssl_config_file={config}", f"--rest_api_port={rest_port}"],
        tmp_path / "server.log", credentials=credentials(pki.ca),
    ).start()
    try:
        with server.channel() as channel:
            assert predict(channel) == 3.0
        refused(grpc.insecure_channel(server.address))
        refused(grpc.secure_channel(server.address, credentials(pki.other_ca)))
        response = requests.post(f"http://127.0.0.1:{rest_port}/v1/models/default:predict",
                                 json={"instances": [2.0]}, timeout=TIMEOUT)
        assert response.json() == {"predictions": [3.0]}  # REST stays plaintext, as in TF
    finally:
        server.stop()


def encrypted_key_config(pki: Pki) -> str:
    """The server's own key and certificate, the key under a passphrase."""
    key = serialization.load_pem_private_key(pki.server.key, None)
    locked = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.BestAvailableEncryption(b"secret"))
    return ssl_config(Pem(locked, pki.server.cert), None, client_verify=False)


def test_a_key_under_a_passphrase_stops_start_up_without_a_prompt(
    pki: Pki, tmp_path: Path
) -> None:
    config = tmp_path / "ssl.config"
    config.write_text(encrypted_key_config(pki))
    server = ServerProcess([MODEL, f"--ssl_config_file={config}"], tmp_path / "server.log")
    with pytest.raises(RuntimeError, match="a key under a passphrase cannot be used"):
        server.start()
    assert "Traceback" not in server.logs() and "PEM pass phrase" not in server.logs()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("client_verify: true", "needs both server_key and server_cert"),
        ("server_key: 'x' server_cert: 'y'", "unusable key or certificate"),
    ],
)
def test_bad_ssl_config_stops_start_up(text: str, message: str, tmp_path: Path) -> None:
    config = tmp_path / "ssl.config"
    config.write_text(text)
    server = ServerProcess([MODEL, f"--ssl_config_file={config}"], tmp_path / "server.log")
    with pytest.raises(RuntimeError, match=message):
        server.start()
