# Observations of the shared storage made from inside a test namespace (the test process has no
# route into the test network): `python -m tests.multihost.probe COMMAND ...` prints JSON.
#
#   ready ENDPOINT BUCKET        the S3 API answers: BUCKET exists (made when missing), a PUT
#                                and GET of a probe object work (exit 1 with the error if not)
#   bucket ENDPOINT BUCKET PREFIX  [[key, size], ...] of every object under PREFIX
#   index URL                    {"counts": {...}, "rows": [[sop_instance_uid, path], ...]}
#
# Rules: credentials from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), as the
# workers take them; reads only, but for the readiness probe's bucket and object.
from __future__ import annotations

import io
import json
import os
import sys
import tempfile
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


def _client(endpoint: str) -> Any:
    from minio import Minio

    parts = urlsplit(endpoint)
    return Minio(
        parts.netloc,
        access_key=os.environ["AWS_ACCESS_KEY_ID"],
        secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        secure=parts.scheme == "https",
    )


def ready(endpoint: str, bucket: str) -> object:
    client = _client(endpoint)
    if not client.bucket_exists(bucket):
        client.make_bucket(bucket)
    client.put_object(bucket, "readiness/probe", io.BytesIO(b"ok"), 2)
    response = client.get_object(bucket, "readiness/probe")
    try:
        assert response.read() == b"ok"
    finally:
        response.close()
        response.release_conn()
    client.remove_object(bucket, "readiness/probe")
    return True


def bucket(endpoint: str, name: str, prefix: str) -> object:
    listing = _client(endpoint).list_objects(name, prefix=prefix, recursive=True)
    return [[str(item.object_name), int(item.size or 0)] for item in listing]


def index(url: str) -> object:
    from workers.store.index import Index

    with tempfile.TemporaryDirectory() as scratch, Index.open(scratch, database=url) as opened:
        rows = opened.backend.fetch("SELECT sop_instance_uid, path FROM instance")
        return {"counts": opened.counts(), "rows": [[str(uid), str(path)] for uid, path in rows]}


def main(argv: Sequence[str]) -> int:
    commands: dict[str, Callable[..., object]] = {"ready": ready, "bucket": bucket, "index": index}
    if not argv or argv[0] not in commands:
        print(f"usage: probe {{{','.join(commands)}}} ARGS...", file=sys.stderr)
        return 2
    try:
        result = commands[argv[0]](*argv[1:])
    except Exception as error:  # noqa: BLE001 - reported to the test as the exit message
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        return 1
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
