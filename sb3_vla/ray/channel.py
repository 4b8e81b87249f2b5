"""A direct connection from the driver to one Ray actor, for the calls made on every env step.

A Ray actor call costs about 1.3 ms on a 2-core machine (`benchmarks/scaleout.py`), a tenth of a GarmentFold-v0
step. The actor opens a TCP listener on its node (:class:`ChannelServer`), tells the driver its address and a random
key through an ordinary Ray call, and answers the hot calls on that socket (:class:`Channel`) the way
``SubprocVecEnv``'s worker answers its pipe: ``multiprocessing.connection`` messages, pickled. The connection is
authenticated (HMAC challenge with the key) before anything is unpickled, so nothing else on the network can talk to
the actor, and the actor's death shows as a closed socket, not a hang.

Example (in one process; across Ray the server half runs in the actor)::

    >>> server = ChannelServer(lambda method, args: sum(args))
    >>> address = server.open(b"0" * 32, "127.0.0.1")
    >>> channel = Channel(address, b"0" * 32, connect_timeout_s=5.0)
    >>> channel.send("add", (1, 2))
    >>> channel.recv(timeout_s=5.0)
    3
    >>> channel.close()
"""

from __future__ import annotations

import contextlib
import socket
import threading
import traceback
from collections.abc import Callable
from multiprocessing.connection import Client, Connection, Listener
from typing import Any

__all__ = ["Channel", "ChannelClosed", "ChannelServer", "ChannelTimeout"]


class ChannelClosed(ConnectionError):
    """The other end closed the connection (the actor died or was killed)."""


class ChannelTimeout(TimeoutError):
    """No answer within the timeout."""


class ChannelServer:
    """The actor's half: accept one authenticated connection and answer its calls on a daemon thread.

    :param handler: ``handler(method, args)`` answers one call; its exceptions go back to the caller.
    """

    def __init__(self, handler: Callable[[str, tuple[Any, ...]], Any]) -> None:
        self.handler = handler

    def open(self, authkey: bytes, host: str) -> tuple[str, int]:
        """Listen on ``host`` (a free port) and return the ``(host, port)`` to connect to."""
        listener = Listener((host, 0), authkey=authkey)
        address = listener.address
        threading.Thread(target=self._serve, args=(listener,), daemon=True, name="sb3-vla-channel").start()
        return str(address[0]), int(address[1])

    def _serve(self, listener: Listener) -> None:
        with listener:
            while True:  # a reachability probe or a client without the key fails the challenge: wait for the next
                try:
                    conn = listener.accept()
                    break
                except Exception:  # OSError, EOFError, multiprocessing.AuthenticationError
                    continue
        with conn:
            while True:
                try:
                    method, args = conn.recv()
                except (EOFError, OSError):
                    return  # the driver closed the connection (or died)
                try:
                    reply: tuple[Any, ...] = ("ok", self.handler(method, args))
                except Exception as e:  # the caller re-raises it with the remote traceback
                    reply = ("error", e, traceback.format_exc())
                try:
                    conn.send(reply)
                except Exception as e:  # an unpicklable result or exception
                    with contextlib.suppress(Exception):
                        conn.send(("error", RuntimeError(f"{method}: could not send the answer: {e!r}"), ""))


class Channel:
    """The driver's half: connect to a :class:`ChannelServer`, send calls and wait for their answers.

    :param address: ``(host, port)`` from :meth:`ChannelServer.open`.
    :param authkey: the key the server listens with.
    :param connect_timeout_s: seconds to wait for the TCP connection (an unreachable port raises ``OSError``).
    """

    def __init__(self, address: tuple[str, int], authkey: bytes, connect_timeout_s: float) -> None:
        # probe first: multiprocessing's Client has no connect timeout (a filtered port would block for minutes)
        socket.create_connection(address, timeout=connect_timeout_s).close()
        self.conn: Connection = Client(address, authkey=authkey)

    def send(self, method: str, args: tuple[Any, ...]) -> None:
        """Send one call (does not wait)."""
        try:
            self.conn.send((method, args))
        except (OSError, EOFError) as e:
            raise ChannelClosed(str(e)) from e

    def recv(self, timeout_s: float) -> Any:
        """The answer to the oldest call sent; its exception re-raised with the remote traceback as a note."""
        try:
            ready = self.conn.poll(timeout_s)
            if ready:
                status, *payload = self.conn.recv()
        except (OSError, EOFError) as e:
            raise ChannelClosed(str(e) or type(e).__name__) from e
        if not ready:
            raise ChannelTimeout(f"no answer within {timeout_s:g} s")
        if status == "ok":
            return payload[0]
        error, remote_traceback = payload
        if remote_traceback:
            error.add_note(f"remote traceback:\n{remote_traceback}")
        raise error

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()
