"""rung.sockets against real ZeroMQ sockets: messages move whole, and a full queue takes nothing."""

import pytest
import zmq

from rung import sockets


@pytest.fixture
def pair():
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    dealer = context.socket(zmq.DEALER)
    for sock in (router, dealer):
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 4)
        sock.setsockopt(zmq.RCVHWM, 4)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer.connect(f"tcp://127.0.0.1:{port}")
    yield router, dealer
    router.close(0)
    dealer.close(0)
    context.term()


def test_a_message_goes_and_comes_back_whole(pair):
    router, dealer = pair
    sockets.send(dealer, [b"RUNG\x01", b"payload", b"\x00" * 70_000])
    assert router.poll(5000)
    route, *frames = sockets.receive(router)
    assert frames == [b"RUNG\x01", b"payload", b"\x00" * 70_000]
    sockets.send(router, [route, b"one frame"])
    assert dealer.poll(5000)
    assert sockets.receive(dealer) == (b"one frame",)


def test_nothing_waiting_raises_again(pair):
    router, _ = pair
    with pytest.raises(zmq.Again):
        sockets.receive(router)


def test_a_full_queue_refuses_a_message_whole_and_every_taken_one_arrives_whole(pair):
    router, dealer = pair
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # as the broker's: Again instead of a silent drop
    dealer.send(b"hello")  # the router learns the route
    assert router.poll(5000)
    route, _ = router.recv_multipart()
    big = b"x" * (1 << 20)  # fills the kernel's buffers quickly, so the queues reach their marks
    sent = 0
    with pytest.raises(zmq.Again):
        for sent in range(10_000):
            sockets.send(router, [route, b"head", str(sent).encode(), big])
    received = []
    while dealer.poll(1000):
        while True:
            try:
                received.append(sockets.receive(dealer))
            except zmq.Again:
                break
    assert [frames[:2] for frames in received] == [(b"head", str(i).encode()) for i in range(sent)]
    assert all(len(frames) == 3 and frames[2] == big for frames in received)


def test_an_unknown_route_is_refused_by_a_mandatory_router(pair):
    router, _ = pair
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    with pytest.raises(zmq.ZMQError) as raised:
        sockets.send(router, [b"nobody", b"frame"])
    assert raised.value.errno == zmq.EHOSTUNREACH
