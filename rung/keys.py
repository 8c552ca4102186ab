"""CurveZMQ keys: how a broker bound beyond the loopback knows its workers, and they know it.

A key directory holds ZeroMQ certificates as `zmq.auth` writes them (NAME.key public, NAME.key_secret
secret):

    broker.key, broker.key_secret     the broker's pair (workers need only broker.key)
    worker.key, worker.key_secret     a worker's pair
    authorized/*.key                  the public keys of the workers the broker accepts

`rung keys DIR` makes such a directory with one broker and one worker pair, the worker authorized.
Copy `broker.key` and the worker pair to the workers' machines; keep `broker.key_secret` on the head.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import zmq
import zmq.auth


def create_keys(directory: str | Path) -> Path:
    directory = Path(directory)
    (directory / "authorized").mkdir(parents=True, exist_ok=True)
    for name in ("broker", "worker"):
        if not (directory / f"{name}.key_secret").exists():
            zmq.auth.create_certificates(str(directory), name)
    shutil.copy(directory / "worker.key", directory / "authorized" / "worker.key")
    return directory


def _pair(path: Path) -> tuple[bytes, bytes]:
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read the key pair {path}: {error}") from None
    if secret is None:
        raise ValueError(f"{path} holds no secret key")
    return public, secret


def secure_broker(sock: zmq.Socket, directory: str | Path):
    """Make `sock` a CURVE server accepting only the authorized workers; returns the authenticator
    (a ZAP handler thread) to stop when the socket closes."""
    from zmq.auth.thread import ThreadAuthenticator

    directory = Path(directory)
    public, secret = _pair(directory / "broker.key_secret")
    authorized = directory / "authorized"
    if not authorized.is_dir():
        raise ValueError(f"{authorized} does not exist: no worker could ever be accepted")
    authenticator = ThreadAuthenticator(sock.context)
    authenticator.start()
    authenticator.configure_curve(domain="*", location=str(authorized))
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True
    return authenticator


def secure_worker(sock: zmq.Socket, directory: str | Path) -> None:
    directory = Path(directory)
    public, secret = _pair(directory / "worker.key_secret")
    try:
        server, _ = zmq.auth.load_certificate(str(directory / "broker.key"))
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read the broker's public key in {directory}: {error}") from None
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_serverkey = server
