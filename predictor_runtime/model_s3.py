"""Models in S3: the runtime's one boundary with boto3 (client, credentials, errors) and S3Source.

Credentials. Cortex 0.23 read S3 without signing when AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY were not both set (its lib/storage/s3.py), so a public
bucket needed no keys. The runtime does the same, asking botocore's credential
chain instead of the two variables: no credentials found -> an unsigned client
(public buckets read as under Cortex); credentials found (the two keys, a
profile, an instance role) -> signed requests, as before. A replica's
environment is the API's `env` and the project's `.env` (the backends give it
nothing of the daemon's, and a HOME of its own), so keys go there.

Endpoint. AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL (an S3 API server such as
MinIO, or a local one in tests), unless AWS_IGNORE_CONFIGURED_ENDPOINT_URLS is
true: read here, so that a project pinning a boto3 older than 1.28 (which reads
them itself) is pointed there too.

Errors. Every boto3/botocore error is translated once, here (s3_errors), into
a ModelSourceError saying what failed and what to do: a bucket that refused an
unsigned request says that no credentials were found and how to give them.
boto3 is the optional `s3` extra: without it start-up fails saying what to
install.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from predictor_runtime.model_layout import layout_problem
from predictor_runtime.model_sources import Listing, ModelSourceError

log = logging.getLogger("predictor_runtime")

GIVE_KEYS = ("to read a private bucket, give the API AWS keys: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
             "(and AWS_SESSION_TOKEN for temporary ones) in the project's .env or in predictor.env; "
             "a replica sees neither the daemon's environment nor ~/.aws")
_REFUSED_KEYS = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                           "TokenRefreshRequired", "InvalidClientTokenId"})
_DENIED = frozenset({"AccessDenied", "AllAccessDisabled", "403", "Forbidden"})


@dataclass(frozen=True)
class S3Access:
    """A boto3 S3 client and how it authenticates (what error messages say)."""

    client: Any
    signed: bool = True
    credentials: str | None = None  # where botocore found the keys ("env", "shared-credentials-file", ...)
    endpoint: str | None = None


def configured_endpoint(environ: Mapping[str, str]) -> str | None:
    """The S3 endpoint the environment names (botocore's own variables), or None for AWS's."""
    if environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").strip().lower() == "true":
        return None
    return environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL") or None


def open_s3() -> S3Access:
    """An S3 client for this process's environment: signed when botocore finds credentials,
    unsigned (as Cortex read public buckets) when it finds none."""
    try:
        import boto3  # optional: the `s3` extra
        from botocore import UNSIGNED
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError
    except ImportError:
        raise ModelSourceError("s3:// model paths need boto3, which is not installed in this replica; "
                               "install cortexd with the s3 extra (pip install 'cortexd[s3]') "
                               "or add boto3 to the project's requirements.txt") from None
    endpoint = configured_endpoint(os.environ)
    try:
        session = boto3.session.Session()
        credentials = session.get_credentials()
    except BotoCoreError as e:  # partial keys, an AWS_PROFILE that is not there, a broken config file
        raise ModelSourceError(f"the AWS credentials in this API's environment cannot be used: {e}; "
                               f"{GIVE_KEYS}") from None
    try:
        config = Config(signature_version=UNSIGNED) if credentials is None else None
        client = session.client("s3", endpoint_url=endpoint, config=config)
    except (BotoCoreError, ValueError) as e:
        named = f" (endpoint {endpoint}, from AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL)" if endpoint else ""
        raise ModelSourceError(f"cannot set up the S3 client{named}: {e}") from None
    where = f" at {endpoint}" if endpoint else ""
    if credentials is None:
        log.info("no AWS credentials found: reading s3:// models%s without signing, as Cortex did "
                 "(public buckets need no keys)", where)
        return S3Access(client, signed=False, endpoint=endpoint)
    method = getattr(credentials, "method", None)
    log.info("reading s3:// models%s with the AWS credentials found (%s)", where, method or "botocore")
    return S3Access(client, signed=True, credentials=method, endpoint=endpoint)


def describe_error(e: Exception, access: S3Access, where: str, bucket: str) -> str:
    """What a boto3/botocore error means for `where` (a location and what was being done to it)."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError
    except ImportError:  # a fake client in tests, without botocore
        return f"{where}: {e}"
    if isinstance(e, ClientError):
        error = e.response.get("Error") or {}
        code = str(error.get("Code") or "")
        status = (e.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        said = str(error.get("Message") or code or status)
        if code in _REFUSED_KEYS:
            return (f"{where}: S3 refused the AWS credentials found ({access.credentials or 'botocore'}): "
                    f"{code}: {said}; {GIVE_KEYS}")
        if code in _DENIED or status == 403:
            if not access.signed:
                return (f"{where}: no AWS credentials were found, so it was read without signing (as Cortex "
                        f"read public buckets), and bucket {bucket!r} refused anonymous access (403 {said}); "
                        f"{GIVE_KEYS}")
            return (f"{where}: access denied (403 {said}) with the AWS credentials found "
                    f"({access.credentials or 'botocore'}); the keys need s3:ListBucket on bucket {bucket!r} "
                    "and s3:GetObject on its objects")
        if code == "NoSuchBucket":
            return f"{where}: bucket {bucket!r} does not exist"
        if code in ("NoSuchKey", "404", "NotFound") or status == 404:
            return f"{where}: not found (404)"
        return f"{where}: S3 answered {code or status}: {said}"
    if isinstance(e, (ConnectionError, HTTPClientError)):
        return f"{where}: cannot reach S3{' at ' + access.endpoint if access.endpoint else ''}: {e}"
    if isinstance(e, BotoCoreError):
        return f"{where}: {e}"
    return f"{where}: {type(e).__name__}: {e}"


@contextmanager
def s3_errors(access: S3Access, where: str, bucket: str) -> Iterator[None]:
    """Whatever boto3 raises inside becomes a ModelSourceError (describe_error)."""
    try:
        yield
    except ModelSourceError:
        raise
    except Exception as e:
        raise ModelSourceError(describe_error(e, access, where, bucket)) from None


class S3Source:
    """A model under an s3://bucket/prefix URL, listed and downloaded with boto3."""

    remote = True

    def __init__(self, location: str, access: S3Access | None = None):
        self.location = location
        rest = location[len("s3://"):]
        self.bucket, _, prefix = rest.partition("/")
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._access = access

    def __repr__(self) -> str:
        return self.location

    @property
    def access(self) -> S3Access:
        if self._access is None:
            self._access = open_s3()
        return self._access

    def check(self) -> None:
        self.access  # noqa: B018 - fail at start-up when boto3 is missing or the credentials are broken

    def _errors(self, doing: str) -> Any:
        return s3_errors(self.access, f"{self.location}: {doing}" if doing else self.location, self.bucket)

    def _keys(self, prefix: str) -> list[tuple[str, int, str]]:
        """(key, size, ETag) of every object whose key starts with `prefix`."""
        out: list[tuple[str, int, str]] = []
        with self._errors("listing it"):
            paginator = self.access.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                out.extend((obj["Key"], obj.get("Size", 0), str(obj.get("ETag", "")))
                           for obj in page.get("Contents") or ())
        return out

    def _objects(self) -> list[tuple[str, int, str]]:
        """(path relative to the prefix, size, ETag) of every object under it."""
        n = len(self.prefix)
        return [(key[n:], size, tag) for key, size, tag in self._keys(self.prefix)
                if key[n:] and not key.endswith("/")]

    def folders(self) -> list[str]:
        """The names of the folders right under the prefix (models.dir: one model each)."""
        names = []
        with self._errors("listing its folders"):
            paginator = self.access.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix, Delimiter="/"):
                for p in page.get("CommonPrefixes") or ():
                    n = p["Prefix"][len(self.prefix):].strip("/")
                    if n and not n.startswith("."):
                        names.append(n)
        return names

    def child(self, name: str) -> S3Source:
        return S3Source(f"s3://{self.bucket}/{self.prefix}{name}", self.access)

    def listing(self, kind: str) -> Listing:
        try:
            objects = self._objects()
        except ModelSourceError as e:
            log.error("error: %s", e)
            raise
        top = [(r, s, t) for r, s, t in objects if "/" not in r]
        by_version: dict[str, list[tuple[str, int, str]]] = {}
        for rel, size, tag in objects:
            head, _, tail = rel.partition("/")
            if head.isdigit() and tail:
                by_version.setdefault(head, []).append((tail, size, tag))
        if not by_version or (top and layout_problem(kind, [r for r, _, _ in top]) is None):
            files = frozenset(r for r, _, _ in objects)
            problem = layout_problem(kind, files)
            return Listing({} if problem else {1: (files, tuple(sorted(objects)))}, False,
                           {".": problem} if problem else {})
        versions, problems = {}, {}
        for v, objs in by_version.items():
            files = frozenset(r for r, _, _ in objs)
            problem = layout_problem(kind, files)
            if problem:
                problems[v] = problem
            else:
                versions[int(v)] = (files, tuple(sorted(objs)))
        return Listing(versions, True, problems)

    def download(self, version: int, versioned: bool, files: Iterable[str], dest: str) -> None:
        base = self.prefix + (f"{version}/" if versioned else "")
        self._download_all(base, sorted(files), dest)

    def _download_all(self, base: str, files: list[str], dest: str) -> None:
        started = time.monotonic()
        what = f"s3://{self.bucket}/{base}" + (files[0] if len(files) == 1 else f" ({len(files)} files)")
        log.info("downloading %s", what)
        for rel in files:
            target = os.path.join(dest, *rel.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with s3_errors(self.access, f"s3://{self.bucket}/{base}{rel}: downloading it", self.bucket):
                self.access.client.download_file(self.bucket, base + rel, target)
        log.info("downloaded %s in %.1fs", what, time.monotonic() - started)

    def fetch(self, dest_root: str) -> str:
        """Download the whole location as Cortex 0.10-0.12 did `predictor.model`: a prefix with objects
        under it becomes the folder dest_root/<its last segment>, else the object of that key becomes
        the file dest_root/<its name>. Returns that local path."""
        key = self.prefix.rstrip("/")
        target = os.path.join(dest_root, key.rpartition("/")[2] or self.bucket)
        objects = self._objects()
        if objects:
            self._download_all(self.prefix, [rel for rel, _, _ in objects], target)
            return target
        if key and key in {k for k, _, _ in self._keys(key)}:
            os.makedirs(dest_root, exist_ok=True)
            self._download_all(key.rpartition("/")[0] + "/" if "/" in key else "", [os.path.basename(key)],
                               dest_root)
            return target
        raise ModelSourceError(f"{self.location}: nothing there (no object named {key!r} and no objects "
                               f"under {self.prefix or 'the bucket'!r})")
