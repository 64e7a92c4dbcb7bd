"""What every classic `ec2-*` command shares: options, settings, the API client, output.

A command is a `Command`: its names, the arguments it adds to the shared options, the
record layouts it prints (used for `-H` headers) and a `run(ctx, args)` function that makes
its API calls through `ctx.call` and prints through `ctx.out`. `execute` does the rest the
way the old Amazon ec2-api-tools did: option parsing (bad flags print usage and exit 2),
credentials and endpoint from the environment, and errors printed as `Client.<Code>:
<Message>` on stderr with exit code 1. Every request is a real SigV4-signed EC2 Query API
request made by botocore; nothing here touches the server's database.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from stockade.config import DEFAULT_PORT

DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}"
DEFAULT_REGION = "us-east-1"
NIL = "(nil)"

# (access key, secret key) environment variables, in the order they are consulted.
KEY_VARIABLES = (
    ("EC2_ACCESS_KEY", "EC2_SECRET_KEY"),
    ("AWS_ACCESS_KEY", "AWS_SECRET_KEY"),
    ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
)
REGION_VARIABLES = ("EC2_REGION", "AWS_DEFAULT_REGION")


class UsageError(Exception):
    """Arguments that parse but make no sense together: printed with usage, exit 2."""


class Failure(Exception):
    """A failure that is not the server's answer (no credentials, no server): exit 1."""


@dataclass(frozen=True)
class Command:
    """One classic command: ``ec2-create-group`` and its aliases."""

    name: str
    aliases: tuple[str, ...]
    summary: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[Context, argparse.Namespace], int | None]
    # Record type -> column names after the type; printed as headers by -H/--headers.
    layouts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    epilog: str | None = None
    # What to try next after the server refused: (args, error code, message) -> a line
    # printed after the error, or None.
    hint: Callable[[argparse.Namespace, str, str], str | None] | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


# --- output ------------------------------------------------------------------------------


class Output:
    """Tab-separated records, as the old tools printed them: ``TYPE<TAB>col<TAB>col...``.

    Empty columns stay in place (so columns line up by position); ``--show-empty-fields``
    prints them as ``(nil)``.
    """

    def __init__(self, stream: TextIO, show_empty: bool = False) -> None:
        self.stream = stream
        self.show_empty = show_empty

    def cell(self, value: Any) -> str:
        if value is None or value == "":
            return NIL if self.show_empty else ""
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    def record(self, kind: str, *columns: Any) -> None:
        self.stream.write("\t".join([kind, *(self.cell(c) for c in columns)]) + "\n")

    def headers(self, layouts: Mapping[str, tuple[str, ...]]) -> None:
        for columns in layouts.values():
            self.stream.write("\t".join(["Type", *columns]) + "\n")


# --- settings ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    url: str
    region: str
    access_key: str
    secret_key: str


def first_set(environ: Mapping[str, str], names: Iterable[str]) -> str | None:
    for name in names:
        if environ.get(name):
            return environ[name]
    return None


def settings_from(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """Endpoint, region and keys: flags first, then the old tools' environment variables."""
    url = args.url or environ.get("EC2_URL") or DEFAULT_URL
    if "://" not in url:
        url = "http://" + url
    region = args.region or first_set(environ, REGION_VARIABLES) or DEFAULT_REGION
    access = args.access_key or first_set(environ, (a for a, _ in KEY_VARIABLES))
    secret = args.secret_key or first_set(environ, (s for _, s in KEY_VARIABLES))
    if not access or not secret:
        missing = "access key" if not access else "secret key"
        raise Failure(
            f"no AWS {missing}: set EC2_ACCESS_KEY and EC2_SECRET_KEY (or AWS_ACCESS_KEY/"
            "AWS_SECRET_KEY, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), or pass -O and -W. "
            'For a local Stockade, eval "$(stockade env)" sets them.'
        )
    return Settings(url, region, access, secret)


# --- the API -----------------------------------------------------------------------------


class Context:
    """What a command's ``run`` gets: the parsed settings, an API caller and the output."""

    def __init__(
        self,
        settings: Settings,
        out: Output,
        err: TextIO,
        verbose: bool = False,
        prog: str = "ec2",
    ) -> None:
        self.prog = prog
        self.settings = settings
        self.out = out
        self.err = err
        self.verbose = verbose
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = make_client(self.settings, self.err if self.verbose else None)
        return self._client

    def call(self, operation: str, **params: Any) -> dict[str, Any]:
        """One EC2 API action by its name (``DescribeSecurityGroups``), botocore-signed."""
        from botocore import xform_name

        return getattr(self.client, xform_name(operation))(**params)

    def call_all(self, operation: str, key: str, **params: Any) -> list[dict[str, Any]]:
        """An action's list ``key`` from every page (follows NextToken)."""
        items: list[dict[str, Any]] = []
        while True:
            reply = self.call(operation, **params)
            items.extend(reply.get(key, []))
            token = reply.get("NextToken")
            if not token:
                return items
            params["NextToken"] = token


def make_client(settings: Settings, trace: TextIO | None) -> Any:
    import botocore.session
    from botocore.config import Config

    session = botocore.session.Session()
    client = session.create_client(
        "ec2",
        region_name=settings.region,
        endpoint_url=settings.url,
        aws_access_key_id=settings.access_key,
        aws_secret_access_key=settings.secret_key,
        config=Config(
            retries={"total_max_attempts": 1},
            connect_timeout=10,
            read_timeout=120,
            user_agent_extra="stockade-classic",
        ),
    )
    if trace is not None:
        events = client.meta.events
        events.register("before-send.ec2", lambda request, **_: show_request(trace, request))
        events.register(
            "response-received.ec2",
            lambda response_dict=None, **_: show_response(trace, response_dict),
        )
    return client


def _text(body: Any) -> str:
    if body is None:
        return ""
    if isinstance(body, bytes):
        return body.decode("utf-8", "replace")
    return str(body)


def show_request(trace: TextIO, request: Any) -> None:
    """-v: the signed request as sent (the signature itself is left out)."""
    trace.write(f"REQUEST {request.method} {request.url}\n")
    for name, value in request.headers.items():
        value = _text(value)
        if name.lower() == "authorization":
            value = re.sub(r"Signature=\w+", "Signature=...", value)
        trace.write(f"{name}: {value}\n")
    trace.write("\n" + _text(request.body) + "\n\n")
    return None  # a before-send handler that returns something replaces the response


def show_response(trace: TextIO, response: Mapping[str, Any] | None) -> None:
    if response is None:
        return
    trace.write(f"RESPONSE {response.get('status_code')}\n")
    trace.write(_text(response.get("body")).rstrip() + "\n\n")


# --- option parsing ----------------------------------------------------------------------


def parser_for(command: Command, prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=command.summary,
        epilog=command.epilog,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.arguments(parser)
    common = parser.add_argument_group("common options")
    common.add_argument(
        "-U", "--url", metavar="URL", help=f"EC2 endpoint (default $EC2_URL, else {DEFAULT_URL})"
    )
    common.add_argument(
        "--region",
        metavar="REGION",
        help=f"region (default $EC2_REGION, $AWS_DEFAULT_REGION, else {DEFAULT_REGION})",
    )
    common.add_argument(
        "-O", "--aws-access-key", dest="access_key", metavar="KEY", help="access key id"
    )
    common.add_argument(
        "-W", "--aws-secret-key", dest="secret_key", metavar="KEY", help="secret access key"
    )
    common.add_argument(
        "-v", "--verbose", action="store_true", help="print each request and response on stderr"
    )
    common.add_argument("-H", "--headers", action="store_true", help="print column headers")
    common.add_argument(
        "--show-empty-fields", action="store_true", help=f"print empty columns as {NIL}"
    )
    return parser


def add_filter_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-F",
        "--filter",
        dest="filters",
        action="append",
        default=[],
        type=filter_pair,
        metavar="NAME=VALUE",
        help="only what matches (repeatable; the same NAME twice means either value)",
    )


def filter_pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"a filter is NAME=VALUE, not {text!r}")
    return name, value


def api_filters(pairs: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    merged: dict[str, list[str]] = {}
    for name, value in pairs:
        merged.setdefault(name, []).append(value)
    return [{"Name": name, "Values": values} for name, values in merged.items()]


def attach_dash_values(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """``-t -1:-1`` as ``--icmp-type-code=-1:-1``: argparse would take ``-1:-1`` for a flag.

    A value that starts with ``-`` is attached to the option before it when that option
    takes one value and the word is not an option itself.
    """
    actions = parser._option_string_actions  # noqa: SLF001 - argparse has no public map
    out: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        action = actions.get(word)
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if (
            action is not None
            and action.nargs is None
            and action.option_strings
            and nxt is not None
            and nxt.startswith("-")
            and nxt not in actions
        ):
            longest = max(action.option_strings, key=len)
            out.append(f"{longest}={nxt}")
            i += 2
            continue
        out.append(word)
        i += 1
    return out


# --- running a command -------------------------------------------------------------------


def execute(
    command: Command,
    argv: Sequence[str],
    prog: str | None = None,
    environ: Mapping[str, str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run ``command`` with ``argv`` (no program name); the exit status."""
    from botocore import exceptions as bx

    prog = prog or command.name
    environ = os.environ if environ is None else environ
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    parser = parser_for(command, prog)
    args = parser.parse_intermixed_args(attach_dash_values(parser, argv))
    out = Output(stdout, show_empty=args.show_empty_fields)
    settings: Settings | None = None
    try:
        settings = settings_from(args, environ)
        ctx = Context(settings, out, stderr, verbose=args.verbose, prog=prog)
        if args.headers:
            out.headers(command.layouts)
        status = command.run(ctx, args) or 0
        stdout.flush()
        return status
    except UsageError as e:
        parser.error(str(e))  # exits 2
    except Failure as e:
        stderr.write(f"{prog}: {e}\n")
    except bx.ClientError as e:
        error = e.response.get("Error", {})
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 400
        side = "Server" if status >= 500 else "Client"
        code = error.get("Code", "Unknown")
        message = error.get("Message") or code
        stderr.write(f"{side}.{code}: {message}\n")
        hint = command.hint(args, code, message) if command.hint else None
        if hint:
            stderr.write(f"{prog}: {hint}\n")
    except (bx.ConnectionError, bx.HTTPClientError) as e:
        url = settings.url if settings else "?"
        stderr.write(f"{prog}: could not reach the EC2 endpoint {url}: {e}\n")
        stderr.write(
            f"{prog}: check EC2_URL (or -U/--url) and that `stockade serve` is running there "
            f"(it listens on {DEFAULT_URL} by default)\n"
        )
    except (bx.BotoCoreError, ValueError) as e:
        # e.g. a malformed URL or region, or a parameter botocore rejects before sending
        stderr.write(f"{prog}: {e}\n")
    return 1


def run(command: Command, argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: parse ``sys.argv`` and exit with the command's status."""
    invoked = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    prog = invoked if invoked in command.names else command.name
    try:
        status = execute(command, sys.argv[1:] if argv is None else argv, prog)
    except KeyboardInterrupt:
        status = 130
    except BrokenPipeError:
        # `ec2-describe-group | head`: the reader left; say nothing more.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        status = 1
    sys.exit(status)
