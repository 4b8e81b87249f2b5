"""The direct driver-to-actor channel (``sb3_vla.ray.channel``), in one process: no Ray needed."""

from __future__ import annotations

import multiprocessing.connection
import os
import threading

import numpy as np
import pytest

from sb3_vla.ray.channel import Channel, ChannelClosed, ChannelServer, ChannelTimeout


def _handler(method, args):
    if method == "echo":
        return args
    if method == "fail":
        raise KeyError("no such thing")
    if method == "wait":
        import time

        time.sleep(args[0])
        return "late"
    raise ValueError(method)


def test_calls_round_trip_arrays_and_errors_keep_the_remote_traceback():
    key = os.urandom(32)
    channel = Channel(ChannelServer(_handler).open(key, "127.0.0.1"), key, connect_timeout_s=5.0)
    try:
        array = np.arange(6, dtype=np.float32).reshape(2, 3)
        channel.send("echo", (array, {"k": 1}))
        got, extra = channel.recv(5.0)
        np.testing.assert_array_equal(got, array)
        assert got.dtype == np.float32 and got.flags.writeable and extra == {"k": 1}
        channel.send("fail", ())
        with pytest.raises(KeyError, match="no such thing") as raised:
            channel.recv(5.0)
        assert "in _handler" in raised.value.__notes__[0]
        channel.send("echo", (1,))  # still in step after an error
        assert channel.recv(5.0) == (1,)
    finally:
        channel.close()


def test_a_client_without_the_key_is_refused_and_the_right_one_still_connects():
    key = os.urandom(32)
    address = ChannelServer(_handler).open(key, "127.0.0.1")
    with pytest.raises(multiprocessing.AuthenticationError):
        multiprocessing.connection.Client(address, authkey=b"wrong key" * 4)
    channel = Channel(address, key, connect_timeout_s=5.0)
    channel.send("echo", ("ok",))
    assert channel.recv(5.0) == ("ok",)
    channel.close()


def test_timeout_and_closed_peer_raise_instead_of_hanging():
    key = os.urandom(32)
    channel = Channel(ChannelServer(_handler).open(key, "127.0.0.1"), key, connect_timeout_s=5.0)
    channel.send("wait", (0.5,))
    with pytest.raises(ChannelTimeout, match="no answer within 0.05 s"):
        channel.recv(0.05)
    assert channel.recv(5.0) == "late"

    channel.close()

    # the server's end closes (as when its process dies): the answer is a ChannelClosed, not a hang
    listener = multiprocessing.connection.Listener(("127.0.0.1", 0), authkey=key)

    def accept_then_close() -> None:
        with listener:
            while True:  # the first connection is Channel's reachability probe, which fails the challenge
                try:
                    listener.accept().close()
                    return
                except Exception:
                    continue

    thread = threading.Thread(target=accept_then_close)
    thread.start()
    dead = Channel(listener.address, key, connect_timeout_s=5.0)
    thread.join(5.0)
    with pytest.raises(ChannelClosed):
        dead.send("echo", (1,))
        dead.recv(5.0)
    dead.close()


def test_unreachable_address_raises_oserror_quickly():
    with pytest.raises(OSError):
        Channel(("127.0.0.1", 1), b"k" * 32, connect_timeout_s=2.0)  # port 1: nothing listens
