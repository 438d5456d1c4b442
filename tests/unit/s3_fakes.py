"""A fake of the slice of boto3's S3 client that model_s3.S3Source uses, over a dict of objects.

`refuse` makes every call raise what S3 answers a request it refuses (botocore's ClientError,
built as botocore builds it), so the translation of errors is tested without a server; the
real client against a local S3 API server is tested in tests/integration/test_s3_models.py.
"""

from __future__ import annotations

from pathlib import Path


def client_error(code: str, message: str, status: int, operation: str = "ListObjectsV2") -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


class FakeS3:
    """list_objects_v2 (paginated, with or without a delimiter) and download_file over `objects`."""

    def __init__(self, objects: dict[str, bytes], refuse: Exception | None = None):
        self.objects = objects
        self.refuse = refuse
        self.downloads: list[str] = []

    def get_paginator(self, name):
        assert name == "list_objects_v2"
        return self

    def paginate(self, Bucket, Prefix, Delimiter=None):
        if self.refuse is not None:
            raise self.refuse
        keys = sorted(k for k in self.objects if k.startswith(Prefix))
        if Delimiter:
            prefixes = sorted({Prefix + k[len(Prefix):].split(Delimiter)[0] + Delimiter
                               for k in keys if Delimiter in k[len(Prefix):]})
            yield {"CommonPrefixes": [{"Prefix": p} for p in prefixes]}
        else:
            yield {"Contents": [{"Key": k, "Size": len(self.objects[k]), "ETag": str(hash(self.objects[k]))}
                                for k in keys]}

    def download_file(self, bucket, key, target):
        if self.refuse is not None:
            raise self.refuse
        self.downloads.append(key)
        Path(target).write_bytes(self.objects[key])
