"""The one way a command takes its port: bound and listening before the model loads.

A port that is taken, or an address that is not this machine's, then fails at once with a
message naming the command's own flags, instead of after minutes of loading (or, as gradio
would, by moving to the next free port). ``python -m minigpt4.serve`` and ``demo.py --api``
hand the socket to uvicorn; ``demo.py`` alone closes it just before gradio binds the same port.
"""

from __future__ import annotations

import socket


def listen(
    host: str, port: int, host_flag: str = "--host", port_flag: str = "--port"
) -> socket.socket:
    """A TCP socket listening on ``host:port``; ``SystemExit`` naming ``host_flag`` /
    ``port_flag`` when it cannot be had.

    Like uvicorn and gradio, the socket may reuse a port in TIME_WAIT, but not one that a
    running server listens on.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise SystemExit(f"{host_flag} {host}: not an address of this machine ({err})") from err
    # The TCP protocol number matters: asyncio switches Nagle's algorithm off (and so avoids
    # 40 ms delayed-ACK stalls per answer) only on sockets that name it.
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen()
    except OSError as err:
        sock.close()
        raise SystemExit(
            f"{port_flag} {port}: {host}:{port} cannot be used ({err.strerror or err}); "
            f"stop the program that holds it, or choose another port with {port_flag}"
        ) from err
    return sock
