"""The Jobs API client side of ``submit`` / ``status`` / ``stop``, without click.

Authentication: Ray's dashboard (and so the Jobs API) asks for a bearer token when the
head runs with token authentication (the default for a head that has ``~/.ray/auth_token``).
The token comes from ``--auth-token``, ``--auth-token-file``, ``$RAY_AUTH_TOKEN``, the file
named by ``$RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``, first found wins. It is sent as
an ``Authorization`` header and never printed; a rejected token gives one clear line.

Errors are :class:`JobsUsageError` (what the user gave is wrong) and :class:`JobsApiError`
(the Jobs API failed), each one line naming the cause and never the token; the command
layer (:mod:`fastsam2.cli.jobs`) shows them.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ADDRESS_ENVS = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
TOKEN_FILE_DEFAULT = Path("~/.ray/auth_token")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
WAIT_TIMEOUT_EXIT = 124  # like timeout(1): the job is still running


class JobsUsageError(ValueError):
    """What the user gave cannot work (address, token file, runtime env, extra): one line."""


class JobsApiError(RuntimeError):
    """The Jobs API failed or refused us: one line naming the cause (never the token)."""


def resolve_address(address: str | None) -> str:
    """The Jobs API URL: --address, else $RAY_API_SERVER_ADDRESS, else $RAY_ADDRESS (http(s) added if missing)."""
    if not address:
        for env in ADDRESS_ENVS:
            if os.environ.get(env):
                address = os.environ[env]
                break
    if not address:
        raise JobsUsageError("--address is required: the Ray dashboard URL of the head, e.g. http://HEAD:8265 "
                             "(or set RAY_API_SERVER_ADDRESS)")
    if "://" not in address:
        address = "http://" + address
    if not address.startswith(("http://", "https://")):
        raise JobsUsageError(f"--address must be the dashboard's http(s) URL (e.g. http://HEAD:8265), got {address!r}")
    return address.rstrip("/")


@dataclass(frozen=True)
class AuthToken:
    """A token and where it came from (the source is safe to print; the token never is)."""

    value: str | None
    source: str

    def __repr__(self) -> str:  # keep the secret out of tracebacks and logs
        return f"AuthToken(source={self.source!r}, value={'***' if self.value else None})"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.value}"} if self.value else {}


def _read_token_file(path: Path, what: str) -> str:
    try:
        token = path.expanduser().read_text().strip()
    except OSError as exc:
        raise JobsUsageError(f"cannot read the auth token file given by {what} ({path}): {exc.strerror}") from None
    if not token:
        raise JobsUsageError(f"the auth token file given by {what} ({path}) is empty")
    return token


def resolve_token(token: str | None = None, token_file: str | None = None) -> AuthToken:
    """First of: --auth-token, --auth-token-file, $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."""
    if token:
        return AuthToken(token.strip(), "--auth-token")
    if token_file:
        return AuthToken(_read_token_file(Path(token_file), "--auth-token-file"), f"--auth-token-file {token_file}")
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return AuthToken(os.environ["RAY_AUTH_TOKEN"].strip(), "$RAY_AUTH_TOKEN")
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        path = os.environ["RAY_AUTH_TOKEN_PATH"]
        return AuthToken(_read_token_file(Path(path), "$RAY_AUTH_TOKEN_PATH"), f"$RAY_AUTH_TOKEN_PATH ({path})")
    default = TOKEN_FILE_DEFAULT.expanduser()
    if default.is_file():
        value = default.read_text().strip()
        if value:
            return AuthToken(value, str(TOKEN_FILE_DEFAULT))
    return AuthToken(None, "none")


def auth_failure(address: str, auth: AuthToken, status: int) -> JobsApiError:
    """The error for a missing (401) or rejected (403) token."""
    if status == 401 or not auth.value:
        return JobsApiError(
            f"the Ray dashboard at {address} requires an auth token and none was sent. Give it with "
            f"$RAY_AUTH_TOKEN, --auth-token-file FILE or {TOKEN_FILE_DEFAULT} (on the head: `ray get-auth-token`)."
        )
    return JobsApiError(
        f"the Ray dashboard at {address} rejected the auth token from {auth.source} (HTTP {status}): "
        f"it is not the head's token (on the head: `ray get-auth-token`)."
    )


def _auth_status(exc: Exception) -> int:
    return 403 if "Authentication failed" in str(exc) else 401


@contextmanager
def api_errors(address: str, auth: AuthToken, job_id: str | None = None) -> Iterator[None]:
    """Turn Jobs API failures into one-line :class:`JobsApiError` naming the cause (never the token)."""
    import requests
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError as exc:
        raise auth_failure(address, auth, _auth_status(exc)) from None
    except (ConnectionError, requests.exceptions.ConnectionError):
        raise JobsApiError(
            f"cannot reach the Ray Jobs API at {address}: is the head running, and is this its dashboard "
            f"address (port 8265 by default)?") from None
    except requests.exceptions.RequestException as exc:
        raise JobsApiError(f"Jobs API request to {address} failed: {type(exc).__name__}") from None
    except RuntimeError as exc:
        if isinstance(exc, JobsApiError):
            raise
        msg = str(exc)
        if job_id and "404" in msg:
            raise JobsApiError(f"no job {job_id!r} on the cluster at {address}") from None
        if "status code 401" in msg or "status code 403" in msg:
            raise auth_failure(address, auth, 403 if "403" in msg else 401) from None
        if auth.value:
            msg = msg.replace(auth.value, "***")
        raise JobsApiError(f"Jobs API at {address}: {msg}") from None


def connect(address: str, auth: AuthToken):
    """A JobSubmissionClient that sends our token (and only ours)."""
    from ray.job_submission import JobSubmissionClient

    with api_errors(address, auth):
        return JobSubmissionClient(address, headers=auth.headers())


def job_status(status) -> str:
    """A Jobs API status (enum or string) as its name."""
    return str(getattr(status, "value", status))


def _print_chunk(chunk: str) -> None:
    sys.stdout.write(chunk)
    sys.stdout.flush()


def follow(client, job_id: str, address: str, auth: AuthToken, timeout: float | None = None,
           stream_logs: bool = True, write: Callable[[str], None] = _print_chunk,
           note: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> str:
    """Stream the job's logs (to ``write``) until it ends; its final status (or RUNNING on timeout)."""
    deadline = None if timeout is None else time.monotonic() + timeout

    async def _tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            write(chunk)

    if stream_logs:
        from ray.exceptions import AuthenticationError

        try:
            asyncio.run(asyncio.wait_for(_tail(), timeout))
        except asyncio.TimeoutError:
            pass
        except AuthenticationError as exc:
            raise auth_failure(address, auth, _auth_status(exc)) from None
        except Exception as exc:  # noqa: BLE001 - the log stream is best effort; the status below decides
            note(f"(log stream ended: {type(exc).__name__}; polling the job's status)")
    while True:
        with api_errors(address, auth, job_id):
            status = job_status(client.get_job_status(job_id))
        if status in TERMINAL or (deadline is not None and time.monotonic() >= deadline):
            return status
        time.sleep(1.0)


def job_exit_code(message: str | None) -> int:
    """The entrypoint's exit status from Ray's job message (``... failed with exit code 3 ...``), else 1."""
    match = re.search(r"exit code (\d+)", message or "")
    code = int(match.group(1)) if match else 1
    return code if 0 < code < 256 else 1


def timestamp(ms: int | None) -> str | None:
    """A Jobs API time (ms since the epoch) as ISO 8601, UTC."""
    if not ms:
        return None
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="seconds")
