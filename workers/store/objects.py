# The object store: Part 10 objects in an S3-compatible bucket, for worker hosts that share no
# file system (`--store s3://BUCKET/PREFIX?endpoint=http://HOST:PORT`).
#
# Rules: the same calls as workers.store.files.FileStore (store, adopt, spool_directory), so
# the storage handler and the C-GET/C-MOVE/storage-commitment readers need not know which one
# runs. Keys are PREFIX/objects/<study>/<series>/<sop>.dcm from validated UIDs; the index row
# keeps the part after PREFIX/, as the file store keeps the path under DATA_DIR. A PUT is
# atomic: the object appears whole once S3 acknowledges it, and only then does `store` return
# (success still waits for the index row). Spooled (streamed) data sets go up as a multipart
# upload read PART_SIZE at a time, so memory stays bounded whatever the object size.
# Credentials come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), never the
# URL. Every client or server failure is an ObjectStoreError (an OSError): C-STORE answers
# Out of Resources (A700H) and nothing is acknowledged.
from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, urlsplit

from node.part10 import file_meta
from workers.store.files import checked_uid, spool_study_and_series, study_and_series

if TYPE_CHECKING:
    from collections.abc import Iterator

    from node.dicomio import Part10
    from workers.store.index import Index
    from workers.store.schema import InstanceRecord

log = logging.getLogger("dicomnode.objects")

#: Multipart part size: the most memory one upload holds (S3 needs at least 5 MiB).
PART_SIZE: Final = 16 << 20
#: Bytes read from the start of an object to index it (the whole object when it fails).
HEAD_BYTES: Final = 1 << 20


class ObjectStoreError(OSError):
    """The object store could not be reached or refused a request."""


@dataclass(frozen=True, slots=True)
class ObjectLocation:
    """A parsed `s3://BUCKET/PREFIX?endpoint=URL&region=R` store URL."""

    bucket: str
    prefix: str
    endpoint: str
    region: str

    @classmethod
    def parse(cls, url: str) -> ObjectLocation:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.hostname:
            raise ValueError(f"the store must be s3://BUCKET/PREFIX, not {url!r}")
        if parts.username or parts.password:
            raise ValueError(
                "no credentials in the store URL: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
            )
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        unknown = set(query) - {"endpoint", "region"}
        if unknown:
            raise ValueError(f"unknown store URL parameter(s): {', '.join(sorted(unknown))}")
        endpoint = query.get("endpoint") or os.environ.get(
            "AWS_ENDPOINT_URL", "https://s3.amazonaws.com"
        )
        if urlsplit(endpoint).scheme not in ("http", "https"):
            raise ValueError(f"the store endpoint must be http:// or https://: {endpoint!r}")
        prefix = parts.path.strip("/")
        return cls(
            bucket=parts.netloc,
            prefix=f"{prefix}/" if prefix else "",
            endpoint=endpoint,
            region=query.get("region") or os.environ.get("AWS_REGION", "us-east-1"),
        )


def is_object_store(url: str | None) -> bool:
    return bool(url) and str(url).startswith("s3://")


class _Concatenated(io.RawIOBase):
    """The file meta and the data set bytes read as one stream, without joining them."""

    def __init__(self, *parts: bytes) -> None:
        self._parts = [memoryview(part) for part in parts]

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        out = bytearray()
        while self._parts and (size < 0 or len(out) < size):
            part = self._parts[0]
            take = part if size < 0 else part[: size - len(out)]
            out += take
            if len(take) == len(part):
                self._parts.pop(0)
            else:
                self._parts[0] = part[len(take) :]
        return bytes(out)


class ObjectPath:
    """One object in the store, with the calls the index readers use on a Path."""

    __slots__ = ("relative", "store")

    def __init__(self, store: ObjectStore, relative: str) -> None:
        self.store = store
        self.relative = relative

    def is_file(self) -> bool:
        return self.store.exists(self.relative)

    def unlink(self, missing_ok: bool = False) -> None:
        self.store.remove(self.relative)

    def read_bytes(self) -> bytes:
        return self.store.read(self.relative)

    def relative_to(self, root: object) -> PurePosixPath:
        """The index row's path (the store, not the data directory, is its root)."""
        return PurePosixPath(self.relative)

    def __str__(self) -> str:
        return f"s3://{self.store.location.bucket}/{self.store.key(self.relative)}"


@dataclass(frozen=True, slots=True)
class StoredInBucket:
    path: ObjectPath
    study_instance_uid: str
    series_instance_uid: str
    replaced: bool


def _client(location: ObjectLocation) -> Any:
    import certifi
    import urllib3
    from minio import Minio

    endpoint = urlsplit(location.endpoint)
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=5.0, read=60.0),
        maxsize=16,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )
    return Minio(
        endpoint.netloc,
        access_key=os.environ.get("AWS_ACCESS_KEY_ID"),
        secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
        secure=endpoint.scheme == "https",
        region=location.region,
        http_client=http,
    )


def _client_errors() -> tuple[type[BaseException], ...]:
    import urllib3
    from minio.error import MinioException

    return (MinioException, urllib3.exceptions.HTTPError)


class ObjectStore:
    """Part 10 objects in a bucket; `root` is local scratch (spools, a SQLite index)."""

    def __init__(
        self,
        location: ObjectLocation | str,
        root: str | os.PathLike[str],
        *,
        index: Index | None = None,
        client: Any = None,
        part_size: int = PART_SIZE,
        implementation_class_uid: str = "2.25.283479113923592446473716104451470361611",
        implementation_version_name: str = "DICOMNODE_010",
        create_bucket: bool = True,
    ) -> None:
        self.location = (
            location if isinstance(location, ObjectLocation) else ObjectLocation.parse(location)
        )
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.client = client if client is not None else _client(self.location)
        self.part_size = part_size
        self.implementation_class_uid = implementation_class_uid
        self.implementation_version_name = implementation_version_name
        self._errors = _client_errors()
        if create_bucket:
            self._ensure_bucket()
        self.index = index
        if index is not None:
            self.bind(index)

    def bind(self, index: Index) -> None:
        """Make `index` locate its rows, and rebuild, from this store."""
        index.locate = self.locate
        index.stored_records = self.records

    def _call(self, what: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except self._errors as error:
            raise ObjectStoreError(f"object store {what} failed: {error}") from error

    def _ensure_bucket(self) -> None:
        bucket = self.location.bucket
        if not self._call("bucket check", self.client.bucket_exists, bucket):
            log.info("creating bucket %s", bucket)
            self._call("bucket creation", self.client.make_bucket, bucket)

    def key(self, relative: str) -> str:
        return self.location.prefix + relative

    def locate(self, relative: str) -> ObjectPath:
        return ObjectPath(self, relative)

    @staticmethod
    def relative_for(study: str, series: str, sop_instance: str) -> str:
        parts = (
            checked_uid(study, "Study Instance UID"),
            checked_uid(series, "Series Instance UID"),
            checked_uid(sop_instance, "SOP Instance UID") + ".dcm",
        )
        return "objects/" + "/".join(parts)

    @property
    def spool_directory(self) -> Path:
        return self.root / "spool"

    def exists(self, relative: str) -> bool:
        from minio.error import S3Error

        try:
            self.client.stat_object(self.location.bucket, self.key(relative))
        except S3Error as error:
            if error.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                return False
            raise ObjectStoreError(f"object store HEAD failed: {error}") from error
        except self._errors as error:
            raise ObjectStoreError(f"object store HEAD failed: {error}") from error
        return True

    def remove(self, relative: str) -> None:
        self._call("DELETE", self.client.remove_object, self.location.bucket, self.key(relative))

    def read(self, relative: str, length: int = 0) -> bytes:
        """The object's bytes (its first `length` bytes when `length`)."""

        def get() -> bytes:
            response = self.client.get_object(
                self.location.bucket, self.key(relative), length=length
            )
            try:
                return bytes(response.read())
            finally:
                response.close()
                response.release_conn()

        return bytes(self._call("GET", get))

    def store(
        self,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax: str,
        dataset: bytes,
        source_ae_title: str = "",
        *,
        study_and_series_uids: tuple[str, str] | None = None,
    ) -> StoredInBucket:
        """PUT one object; returns once the store acknowledged it."""
        checked_uid(sop_class_uid, "SOP Class UID")
        checked_uid(transfer_syntax, "Transfer Syntax UID")
        study, series = study_and_series_uids or study_and_series(dataset, transfer_syntax)
        relative = self.relative_for(study, series, sop_instance_uid)
        header = file_meta(
            sop_class_uid,
            sop_instance_uid,
            transfer_syntax,
            self.implementation_class_uid,
            self.implementation_version_name,
            source_ae_title,
        )
        replaced = self.exists(relative)
        self._call(
            "PUT",
            self.client.put_object,
            self.location.bucket,
            self.key(relative),
            _Concatenated(header, dataset),
            len(header) + len(dataset),
            content_type="application/dicom",
            part_size=self.part_size,
        )
        return StoredInBucket(self.locate(relative), study, series, replaced)

    def adopt(
        self,
        spool: Path,
        sop_instance_uid: str,
        transfer_syntax: str,
        header_length: int,
        study_and_series_uids: tuple[str, str] | None = None,
    ) -> StoredInBucket:
        """Upload a finished spool (a Part 10 file) in parts, then delete it."""
        study, series = spool_study_and_series(
            spool, transfer_syntax, header_length, study_and_series_uids
        )
        relative = self.relative_for(study, series, sop_instance_uid)
        replaced = self.exists(relative)
        self._call(
            "multipart upload",
            self.client.fput_object,
            self.location.bucket,
            self.key(relative),
            str(spool),
            content_type="application/dicom",
            part_size=self.part_size,
        )
        spool.unlink(missing_ok=True)
        return StoredInBucket(self.locate(relative), study, series, replaced)

    def records(self) -> Iterator[InstanceRecord | None]:
        """The index record of every object under PREFIX/objects/ (None for an unreadable
        one, logged): `dicomnode index rebuild` from the bucket."""
        from workers.store.schema import record_from_part10

        listing = self._call(
            "listing",
            self.client.list_objects,
            self.location.bucket,
            prefix=self.key("objects/"),
            recursive=True,
        )
        try:
            for item in listing:
                name = str(item.object_name)
                if not name.endswith(".dcm"):
                    continue
                relative = name[len(self.location.prefix) :]
                size = int(item.size or 0)
                try:
                    head = self.read(relative, HEAD_BYTES if size > 4 * HEAD_BYTES else 0)
                    try:
                        yield record_from_part10(io.BytesIO(head), size, relative, name)
                    except Exception:
                        if len(head) >= size:
                            raise
                        yield record_from_part10(
                            io.BytesIO(self.read(relative)), size, relative, name
                        )
                except Exception as error:  # noqa: BLE001 - any unreadable object is skipped
                    log.warning("index rebuild: skipping %s: %s", name, error)
                    yield None
        except self._errors as error:
            raise ObjectStoreError(f"object store listing failed: {error}") from error


def read_part10_bytes(data: bytes) -> Part10:
    """A Part 10 file's bytes (PS3.10 7.1) split as node.dicomio.read_part10 splits a file."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import read_dataset, read_preamble

    from node.dicomio import Part10

    handle = DicomBytesIO(data)
    read_preamble(handle, force=False)  # type: ignore[arg-type]
    meta = read_dataset(handle, False, True, stop_when=lambda tag, vr, length: tag >> 16 != 2)  # type: ignore[arg-type]
    required = ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID")
    missing = [keyword for keyword in required if keyword not in meta]
    if missing:
        raise ValueError(f"file meta information lacks {', '.join(missing)}")
    return Part10(
        str(meta.MediaStorageSOPClassUID).rstrip("\0 "),
        str(meta.MediaStorageSOPInstanceUID).rstrip("\0 "),
        str(meta.TransferSyntaxUID).rstrip("\0 "),
        data[handle.tell() :],
    )


def open_store(
    data_dir: str | os.PathLike[str], url: str | None, *, fsync: bool, index: Index | None
) -> Any:
    """The built-in store: the object store a `s3://` URL names, else the file store of
    DATA_DIR (workers.store.index.IndexedFileStore when `index` is given)."""
    if is_object_store(url):
        return ObjectStore(str(url), data_dir, index=index)
    if url:
        raise ValueError(f"--store must be an s3:// URL: {url!r}")
    if index is not None:
        from workers.store.index import IndexedFileStore

        return IndexedFileStore(data_dir, fsync=fsync, index=index)
    from workers.store.files import FileStore

    return FileStore(data_dir, fsync=fsync)
