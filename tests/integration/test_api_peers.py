"""Peers: remote OpenAI-compatible servers behind llamaswap, over HTTP and verified HTTPS."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from api_ports import own_port_model
from conftest import body_json, upstream_cmd
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor, ssl
from twisted.web.resource import Resource
from twisted.web.server import Site


@pytest_twisted.ensureDeferred
async def test_peer_models_by_fqn_and_bare_name_streaming_and_listed(llamaswap) -> None:
    remote = await llamaswap(f"""
apiKeys: [peer-key-5d1]
models:
  remote-chat:
    {own_port_model("remote-chat")}
  shared:
    {own_port_model("shared-remote")}
""")
    local = await llamaswap(f"""
models:
  shared:
    {own_port_model("shared-local")}
peers:
  box:
    proxy: {remote.url}
    apiKey: peer-key-5d1
    models: [remote-chat, shared]
    filters:
      setParams: {{seed: 7}}
""")
    listed = await body_json(await local.get("/v1/models"))
    ids = [record["id"] for record in listed["data"]]
    assert ids == ["box/remote-chat", "box/shared", "shared"]
    peer_record = listed["data"][0]
    assert peer_record["meta"]["llamaswap"] == {"type": "peer", "peerID": "box"}
    assert peer_record["name"] == "box: remote-chat"

    for name in ("box/remote-chat", "remote-chat"):  # FQN, and the unambiguous bare name
        seen = await body_json(await local.chat(name, test_echo=True))
        assert seen["path"] == "/v1/chat/completions"
        sent = json.loads(seen["body"])
        assert sent["model"] == "remote-chat" and sent["seed"] == 7
        # Only the peer's own hop: the local llamaswap adds no X-Forwarded-For for a peer.
        assert seen["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert remote.starts == {"remote-chat": 1}
    assert local.starts == {}  # peers bypass the local router

    # A bare name that is also local is local; the FQN reaches the peer.
    assert (await body_json(await local.chat("shared")))["model"] == "shared-local"
    remote_shared = await body_json(await local.chat("box/shared"))
    assert remote_shared.get("model") == "shared-remote", remote_shared

    response = await local.chat("box/remote-chat", stream=True)
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type")[0].startswith("text/event-stream")
    events = (await treq.text_content(response)).split("\n\n")
    assert events[-2] == "data: [DONE]" and len(events) > 3

    via_upstream = await local.get("/upstream/box/remote-chat/v1/models")
    assert via_upstream.code == 200
    assert (await body_json(via_upstream))["data"][0]["id"] == "remote-chat"


@pytest_twisted.ensureDeferred
async def test_peer_without_the_right_key_is_refused_by_it(llamaswap) -> None:
    remote = await llamaswap(f"apiKeys: [right]\nmodels:\n  m:\n    cmd: {upstream_cmd('m')}\n")
    local = await llamaswap(f"peers:\n  box:\n    proxy: {remote.url}\n    apiKey: wrong\n"
                            f"    models: [m]\n")
    response = await local.chat("box/m")
    assert response.code == 401


@pytest_twisted.ensureDeferred
async def test_unreachable_peer_is_a_502(llamaswap) -> None:
    local = await llamaswap("peers:\n  gone:\n    proxy: http://127.0.0.1:9\n    models: [m]\n")
    response = await local.chat("gone/m")
    assert response.code == 502
    assert "peer proxy error" in (await body_json(response))["error"]["message"]


# -- HTTPS -------------------------------------------------------------------------------


def make_ca_and_server_cert(tmp: Path) -> tuple[Path, bytes]:
    """A private CA, and a certificate it signed for ``localhost`` only."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llamaswap test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path = tmp / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server_pem = key.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.TraditionalOpenSSL,
                                   serialization.NoEncryption()) + cert.public_bytes(
        serialization.Encoding.PEM)
    return ca_path, server_pem


class CloudChat(Resource):
    isLeaf = True

    def render_POST(self, request: Any) -> bytes:
        request.setHeader("content-type", "application/json")
        sent = json.loads(request.content.read())
        return json.dumps({"object": "chat.completion", "model": sent["model"],
                           "authorization": request.getHeader("authorization")}).encode()


@pytest_twisted.ensureDeferred
async def test_https_peer_certificates_are_verified(llamaswap, tmp_path: Path) -> None:
    ca_path, server_pem = make_ca_and_server_cert(tmp_path)
    tls = ssl.PrivateCertificate.loadPEM(server_pem).options()
    listening = reactor.listenSSL(0, Site(CloudChat()), tls, interface="127.0.0.1")
    port = listening.getHost().port
    try:
        local = await llamaswap(f"""
peers:
  good:
    proxy: https://localhost:{port}/api
    caCert: {ca_path}
    apiKey: cloud-key
    models: [gpt]
  wrong-host:
    proxy: https://127.0.0.1:{port}/api
    caCert: {ca_path}
    models: [gpt2]
  untrusted:
    proxy: https://localhost:{port}/api
    models: [gpt3]
""")
        good = await local.chat("good/gpt")
        assert good.code == 200
        assert await body_json(good) == {"object": "chat.completion", "model": "gpt",
                                         "authorization": "Bearer cloud-key"}
        for name, why in (("wrong-host/gpt2", "IPAddressMismatch"),  # service_identity
                          ("untrusted/gpt3", "certificate verify failed")):
            refused = await local.chat(name)
            assert refused.code == 502, name
            message = (await body_json(refused))["error"]["message"]
            assert message.startswith("peer proxy error") and why in message, message
    finally:
        await listening.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_config_reload_brings_new_peers_selectors_and_limits(llamaswap) -> None:
    swapper = await llamaswap(f"models:\n  alpha:\n    {own_port_model('alpha')}\n")
    assert (await swapper.chat("loop/alpha")).code == 404
    path = Path(swapper.service.config.path)
    path.write_text(path.read_text() + f"""maxRequestSize: 2000
peers:
  loop: {{proxy: "{swapper.url}", models: [alpha]}}
selectors:
  any: {{strategy: pin, targets: [loop/alpha]}}
""")
    swapper.service.reload()
    via_peer = await swapper.chat("loop/alpha")  # a peer that is llamaswap itself
    assert via_peer.code == 200
    assert (await body_json(via_peer))["model"] == "alpha"
    assert (await swapper.chat("any")).code == 200
    too_big = await swapper.chat("alpha", padding="x" * 3000)
    assert too_big.code == 413
