"""The error tree of cortexd. Every error a user can cause is one of these.

    CortexdError                  base; str() is the sentence a user reads
     +-- ConfigError              one or more problems in cortex.yaml files
     |                            (each a ConfigProblem with file:line:column)
     +-- ConfigRejected           the daemon refused a configuration the CLI sent (text lists why)
     +-- UsageError               a command-line value argparse cannot check (e.g. --since)
     +-- SocketPathTooLong        the control socket's path does not fit a unix socket address
     +-- UnsafeHome               CORTEXD_HOME is not the daemon's own (another user can write it)
     +-- BackendUnavailable       the chosen replica backend cannot run (no engine...)
     +-- BackendError             a backend operation failed (build, start, ...)
     |    +-- DependencyError     a project's dependencies cannot be installed (pip's answer)
     +-- DaemonUnavailable        the CLI cannot reach a running daemon
     +-- DaemonAlreadyRunning     `cortexd up` while a daemon answers
     +-- DaemonStartFailed        `cortexd up -d`: the daemon exited before it answered
     +-- UnknownAPI               a command named an API the daemon does not serve
     +-- RequestError             a CLI request (predict) could not be made
     +-- ExportError              `cortexd build` / `export kubernetes` cannot make what was asked

Third-party exceptions (docker-py, aiohttp, yaml) are translated into these
once, at the module that talks to the library; the CLI maps classes to exit
codes in one place (cli.EXIT_CODES), and the control API maps them to HTTP
statuses and back in one table (CONTROL_API_ANSWERS, at the end).
"""

from __future__ import annotations

from dataclasses import dataclass


class CortexdError(Exception):
    """Base of every error cortexd reports to a user."""


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a configuration file, located as precisely as known."""

    file: str
    line: int | None  # 1-based
    column: int | None  # 1-based
    api: str | None  # API name, when the problem lies inside one API
    path: str  # field path, e.g. "predictor.models.paths[1].name" ("" for the document)
    message: str  # what was expected and what was found
    what: str = "api"  # what `api` names: "api" or "traffic splitter"

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        subject = []
        if self.api:
            subject.append(f"{self.what} {self.api!r}")
        if self.path:
            subject.append(self.path)
        head = f"{where}: " + (": ".join(subject) + ": " if subject else "")
        return head + self.message


class ConfigError(CortexdError):
    """All the problems found in one pass over one or more cortex.yaml files."""

    def __init__(self, problems: list[ConfigProblem]):
        self.problems = sorted(
            problems, key=lambda p: (p.file, p.line or 0, p.column or 0, p.path)
        )
        super().__init__(str(self))

    # pickled from the daemon's loader process with its problems
    def __reduce__(self) -> tuple[type[ConfigError], tuple[list[ConfigProblem]]]:
        return (type(self), (self.problems,))

    def __str__(self) -> str:
        n = len(self.problems)
        head = f"{n} configuration error{'s' if n != 1 else ''}:"
        return "\n".join([head] + [f"  {p}" for p in self.problems])


class ConfigRejected(CortexdError):
    """The daemon rejected a configuration (the text lists the problems)."""


class UsageError(CortexdError):
    """A command-line value argparse cannot check (e.g. a --since time)."""


class SocketPathTooLong(CortexdError):
    """The control socket's path does not fit in a unix socket address."""


class UnsafeHome(CortexdError):
    """The daemon's home is not its own: another user owns it, can write into it, or controls a
    symbolic link on the way to it (cortexd/home.py); or a file in it is a symbolic link."""


class BackendUnavailable(CortexdError):
    """The replica backend cannot run at all here (with the remedy in the text)."""


class BackendError(CortexdError):
    """A backend operation failed (image build, container start...)."""


class DependencyError(BackendError):
    """A project's environment cannot be made (requirements.txt, conda-packages.txt...).

    str() is the one-line summary (which requirement, which line, why); `detail` holds
    the installer's last lines; `deterministic` says that the same inputs fail again
    (not a network error), so the API shows `error` at once.
    """

    def __init__(self, summary: str, detail: str = "", deterministic: bool = False):
        super().__init__(summary)
        self.summary = summary
        self.detail = detail
        self.deterministic = deterministic


class DaemonUnavailable(CortexdError):
    """No daemon answers on the control socket."""


class DaemonAlreadyRunning(CortexdError):
    """A daemon already answers on the control socket."""


class DaemonStartFailed(CortexdError):
    """The detached daemon exited during start-up (the text holds what it wrote to daemon.log)."""


class UnknownAPI(CortexdError):
    """A command named an API that the daemon does not serve."""


class RequestError(CortexdError):
    """A request sent by the CLI on the user's behalf failed."""


class ExportError(CortexdError):
    """`cortexd build` or `cortexd export kubernetes` cannot make the image or manifests asked for."""


# -- the control API's answers ------------------------------------------------------------------


@dataclass(frozen=True)
class ControlAnswer:
    """How one kind of error crosses the control API: the daemon answers `raised` (and its
    subclasses) with `status` (cortexd/daemon/control.py); the client raises `read_as` for
    that status (cortexd/control_client.py), with `unexplained` when the body says nothing."""

    raised: type[CortexdError]
    status: int
    read_as: type[CortexdError]
    unexplained: str


CONTROL_API_ANSWERS: tuple[ControlAnswer, ...] = (  # the first row the error is an instance of
    ControlAnswer(UnknownAPI, 404, UnknownAPI, "not found"),
    ControlAnswer(ConfigError, 422, ConfigRejected, "the configuration was rejected"),
    ControlAnswer(CortexdError, 409, RequestError, "daemon answered HTTP 409"),
)


def http_status(error: CortexdError) -> int:
    """The control API's status for `error`."""
    return next(row.status for row in CONTROL_API_ANSWERS if isinstance(error, row.raised))


def error_from_http(status: int, message: str | None) -> CortexdError:
    """What the client raises for a control API answer of `status` (>= 400) saying `message`;
    statuses of no row (400 malformed, 403 a replica refused, 5xx) are a RequestError."""
    row = next((row for row in CONTROL_API_ANSWERS if row.status == status), None)
    if row is None:
        return RequestError(message or f"daemon answered HTTP {status}")
    return row.read_as(message or row.unexplained)
