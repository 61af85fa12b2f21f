"""The one ``--storage-options`` flag of every command that reads or writes ``s3://``.

``run``, ``submit``, ``eval``, ``report`` and ``export`` take the same JSON object of
fsspec/s3fs options (an endpoint, a profile, ``anon``...), parsed and checked here
once, so a bad value fails the same way (a named flag, one line) in each of them.
"""

from __future__ import annotations

import json
from typing import Any

import click

HELP = "JSON object of fsspec/s3fs options for s3:// paths, e.g. '{\"anon\": false}' or " \
       "'{\"client_kwargs\": {\"endpoint_url\": \"http://...\"}}'."


class JsonObject(click.ParamType):
    """A JSON object given on the command line, as a dict."""

    name = "json"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dict | None:
        if value is None or isinstance(value, dict):
            return value
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            self.fail(f"not valid JSON: {exc}", param, ctx)
        if not isinstance(parsed, dict):
            self.fail(f"must be a JSON object ({{...}}), got {type(parsed).__name__}", param, ctx)
        return parsed


def storage_options_option(fn):
    """``--storage-options JSON`` (parsed to a dict; None when not given)."""
    return click.option("--storage-options", type=JsonObject(), default=None, help=HELP)(fn)
