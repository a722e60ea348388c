"""The streaming relay on in-memory transports: flow control, completion, both disconnects."""

from __future__ import annotations

from twisted.internet.error import ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from llamaswap.web.relay import Relay, UpstreamBroke


class _RelayingResource(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.relay: Relay | None = None
        self.upstream = StringTransport()

    def render_GET(self, request: Request) -> int:
        self.relay = Relay(request)
        self.relay.makeConnection(self.upstream)  # what response.deliverBody does
        request.notifyFinish().addErrback(lambda _: self.relay.done.cancel())
        return NOT_DONE_YET


def serve() -> tuple[_RelayingResource, StringTransport, object]:
    resource = _RelayingResource()
    channel = Site(resource).buildProtocol(None)
    client = StringTransport()
    channel.makeConnection(client)
    channel.dataReceived(b"GET /stream HTTP/1.1\r\nHost: test\r\n\r\n")
    assert resource.relay is not None
    return resource, client, channel


def outcome(d: object) -> list:
    out: list = []
    d.addBoth(out.append)  # type: ignore[attr-defined]
    return out


def test_chunks_reach_the_client_as_they_arrive() -> None:
    resource, client, _ = serve()
    resource.relay.dataReceived(b"data: one\n\n")
    assert b"data: one" in client.value()
    resource.relay.dataReceived(b"data: two\n\n")
    assert b"data: two" in client.value()


def test_a_slow_client_pauses_the_upstream_and_resumes_it() -> None:
    resource, client, _ = serve()
    client.producer.pauseProducing()  # the client's socket buffer is full
    assert resource.upstream.producerState == "paused"
    client.producer.resumeProducing()
    assert resource.upstream.producerState == "producing"


def test_clean_upstream_end_finishes_the_response() -> None:
    resource, client, _ = serve()
    done = outcome(resource.relay.done)
    resource.relay.dataReceived(b"hello")
    resource.relay.connectionLost(Failure(ResponseDone()))
    assert done == [5]
    assert client.value().endswith(b"0\r\n\r\n")  # the terminating chunk was sent


def test_upstream_failure_mid_body_aborts_the_client_without_a_final_chunk() -> None:
    resource, client, _ = serve()
    done = outcome(resource.relay.done)
    resource.relay.dataReceived(b"partial")
    resource.relay.connectionLost(Failure(ConnectionLost()))
    assert isinstance(done[0], Failure) and done[0].check(UpstreamBroke)
    assert not client.value().endswith(b"0\r\n\r\n")
    assert client.disconnecting  # aborted


def test_client_disconnect_stops_the_upstream_at_once() -> None:
    resource, client, channel = serve()
    done = outcome(resource.relay.done)
    channel.connectionLost(Failure(ConnectionLost()))
    assert resource.upstream.producerState == "stopped"
    assert done[0].check(Exception)  # cancelled, not completed
    resource.relay.dataReceived(b"late")  # ignored, no write after disconnect
