"""A local S3 API server on loopback (moto's ThreadedMotoServer) for tests of s3:// models.

`LocalS3` holds two buckets: PUBLIC, whose objects are public-read (what a public bucket of
Cortex's era was), and PRIVATE, whose objects only a signed request may read. Replicas reach
it through `environment(...)`: AWS_ENDPOINT_URL (the runtime honours it, model_s3.py) and
what makes "no credentials" hold on any machine. The `local_s3` fixture (tests/conftest.py)
starts one per session; each test writes under a prefix of its own. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import uuid
from pathlib import Path

PUBLIC = "public-models"
PRIVATE = "private-models"
# any keys do for a signed request: moto checks signatures only with IAM enforcement on (it is off)
KEYS = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLEKEY000000", "AWS_SECRET_ACCESS_KEY": "example-secret"}


class LocalS3:
    """moto's S3 API on 127.0.0.1, with the two buckets made."""

    def __init__(self) -> None:
        import boto3
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        self.admin = boto3.client("s3", endpoint_url=self.url, region_name="us-east-1", **{
            "aws_access_key_id": KEYS["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": KEYS["AWS_SECRET_ACCESS_KEY"]})
        for bucket in (PUBLIC, PRIVATE):
            self.admin.create_bucket(Bucket=bucket)

    def prefix(self) -> str:
        """A fresh folder name: each test writes under its own."""
        return f"t-{uuid.uuid4().hex[:10]}"

    def put(self, bucket: str, key: str, data: bytes) -> str:
        """One object (public-read in PUBLIC); returns its s3:// URL."""
        acl = "public-read" if bucket == PUBLIC else "private"
        self.admin.put_object(Bucket=bucket, Key=key, Body=data, ACL=acl)
        return f"s3://{bucket}/{key}"

    def put_tree(self, bucket: str, prefix: str, files: dict[str, bytes]) -> str:
        """Objects under `prefix` (relative path -> bytes); returns the prefix's s3:// URL."""
        for rel, data in files.items():
            self.put(bucket, f"{prefix}/{rel}", data)
        return f"s3://{bucket}/{prefix}"

    def put_folder(self, bucket: str, prefix: str, folder: Path) -> str:
        """A local folder's files under `prefix`; returns the prefix's s3:// URL."""
        return self.put_tree(bucket, prefix, {p.relative_to(folder).as_posix(): p.read_bytes()
                                              for p in sorted(folder.rglob("*")) if p.is_file()})

    def environment(self, tmp: Path, keys: bool = False) -> dict[str, str]:
        """A replica's AWS_* variables: this server as its S3 endpoint and, unless `keys`, no
        credentials from anywhere. The two settings tests need beyond a user's defaults, and why:
        AWS_EC2_METADATA_DISABLED, so that a CI machine on EC2 lends no instance role; the
        credentials and config files at paths that do not exist, so that a developer's ~/.aws
        is not read by runtimes started with this process's HOME."""
        env = {"AWS_ENDPOINT_URL": self.url, "AWS_EC2_METADATA_DISABLED": "true",
               "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
               "AWS_CONFIG_FILE": str(tmp / "no-aws-config")}
        if keys:
            env.update(KEYS)
        return env

    def stop(self) -> None:
        self.server.stop()
