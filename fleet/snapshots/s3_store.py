"""An S3 store (`s3://bucket/prefix`) for teams and for AWS machines, which pull chunks directly.

boto3 honours AWS_ENDPOINT_URL (moto, MinIO); we also pass it explicitly for older boto3. Large
objects go multipart through boto3's transfer manager; callers run puts/gets in a bounded pool
(`parallel`). S3 PUTs are atomic per object, so the chunks-then-manifest order gives atomic creates.
"""
from __future__ import annotations

import io
import os
import threading
from datetime import datetime, timedelta, timezone
from typing import Iterable, Iterator, Mapping

from ..errors import EnvironmentProblem, NotFound, UsageError
from ..parallel import parallel   # also at interpreter shutdown
from .store import (HEX64, STORE_FORMAT, ManifestInfo, check_name, format_record, is_snapshot_id, manifest_name,
                    parse_format)

MULTIPART_THRESHOLD = 8 * 1024 * 1024


class S3Store:
    parallel = 16

    def __init__(self, url: str):
        rest = url.removeprefix("s3://")
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise UsageError(f"store URL {url!r} names no bucket", hint="use s3://bucket/prefix")
        self.url = url
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config
        self._client = None
        self._presigner = None
        self._region: str | None = None
        self._client_lock = threading.Lock()
        self._botocfg = Config(max_pool_connections=self.parallel + 4, retries={"max_attempts": 5, "mode": "standard"})
        self._transfer = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD,
                                        max_concurrency=4)
        self._check_bucket()

    # -- plumbing -------------------------------------------------------------------------------
    @property
    def client(self):
        # One client shared by every thread: botocore clients are thread-safe and costly to build.
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    from ..boto_sessions import new_session
                    session = new_session()
                    self._client = session.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None,
                                                  config=self._botocfg)
        return self._client

    def _key(self, *parts: str) -> str:
        return self.prefix + "/".join(parts)

    def _error(self, exc: Exception, what: str) -> Exception:
        from botocore.exceptions import ClientError, NoCredentialsError
        if isinstance(exc, NoCredentialsError):
            return EnvironmentProblem(f"no AWS credentials for the store {self.url}",
                                      hint="set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchBucket",):
                return NotFound(f"S3 bucket {self.bucket!r} does not exist (store {self.url})")
            if code in ("AccessDenied", "403", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return EnvironmentProblem(f"access denied to S3 store {self.url} while trying to {what} ({code})")
            if code in ("NoSuchKey", "404", "NotFound"):
                return NotFound(f"{what}: not found in {self.url}")
            if code in ("EntityTooLarge", "QuotaExceeded"):
                return EnvironmentProblem(f"S3 store {self.url} refused the write ({code}); nothing was published")
            return EnvironmentProblem(f"S3 store {self.url}: cannot {what}: {code or exc}")
        return EnvironmentProblem(f"S3 store {self.url}: cannot {what}: {type(exc).__name__}: {exc}")

    def _check_bucket(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            head = self.client.head_bucket(Bucket=self.bucket)
            self._region = (head.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region")
                            or self.client.meta.region_name)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise NotFound(f"S3 bucket {self.bucket!r} does not exist (store {self.url})") from None
            raise self._error(exc, "reach the bucket") from None
        except BotoCoreError as exc:
            raise self._error(exc, "reach the bucket") from None

    def _put(self, key: str, data: bytes, what: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            if len(data) >= MULTIPART_THRESHOLD:
                self.client.upload_fileobj(io.BytesIO(data), self.bucket, key, Config=self._transfer)
            else:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, what) from None

    def _get(self, key: str, what: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            buf = io.BytesIO()
            self.client.download_fileobj(self.bucket, key, buf, Config=self._transfer)
            return buf.getvalue()
        except ClientError as exc:
            err = self._error(exc, what)
            raise (NotFound(f"{what}: missing from {self.url}") if isinstance(err, NotFound) else err) from None
        except BotoCoreError as exc:
            raise self._error(exc, what) from None

    def _exists(self, key: str) -> bool:
        return self._size(key) is not None

    def _size(self, key: str) -> int | None:
        """The object's size (one HEAD, no body), None when there is none."""
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._error(exc, f"check {key}") from None
        except BotoCoreError as exc:
            raise self._error(exc, f"check {key}") from None

    def _list(self, sub: str) -> Iterator[dict]:
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                              Prefix=self._key(sub) + "/"):
                yield from page.get("Contents", [])
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, f"list {sub}") from None

    def _delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, f"delete {key}") from None

    # -- chunks ---------------------------------------------------------------------------------
    def _chunk_key(self, h: str) -> str:
        return self._key("chunks", h[:2], h)

    def chunk_path(self, h: str) -> str | None:
        return None

    def has_chunks(self, hashes: Iterable[str] | Mapping[str, int]) -> set[str]:
        """The chunks the store holds. Given sizes (a mapping hash → bytes), only those of that size:
        an object cut short under a chunk's key is then written again. The size comes from the HEAD
        or the listing, never from reading the chunk."""
        sizes = hashes if isinstance(hashes, Mapping) else None
        wanted = list(dict.fromkeys(hashes))

        def ok(h: str, size: int | None) -> bool:
            return size is not None and (sizes is None or size == sizes[h])
        if len(wanted) <= 1:
            return {h for h in wanted if ok(h, self._size(self._chunk_key(h)))}
        if len(wanted) > 2000:
            # Listing is ~1000 keys per request; cheaper than one HEAD each for big sets.
            present = {o["Key"].rsplit("/", 1)[-1]: o["Size"] for o in self._list("chunks")}
            return {h for h in wanted if ok(h, present.get(h))}
        found = parallel(wanted, lambda h: (h, self._size(self._chunk_key(h))), self.parallel)
        return {h for h, size in found if ok(h, size)}

    def put_chunk(self, h: str, data: bytes) -> bool:
        self._put(self._chunk_key(h), data, f"upload chunk {h[:12]}")
        return True

    def get_chunk(self, h: str) -> bytes:
        return self._get(self._chunk_key(h), f"chunk {h[:12]}")

    def presign_get(self, h: str, expires_s: int = 3600) -> str:
        """A URL a machine can GET the chunk from without credentials (signed locally: no request)."""
        if self._presigner is None:
            from ..boto_sessions import new_session
            self._presigner = presigning_client(new_session(), self._region)
        return self._presigner.generate_presigned_url("get_object", Params={"Bucket": self.bucket,
                                                      "Key": self._chunk_key(h)}, ExpiresIn=int(expires_s))

    def delete_chunk(self, h: str) -> None:
        self._delete(self._chunk_key(h))

    def iter_chunks(self, older_than_s: float = 0) -> Iterator[str]:
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=older_than_s)
        for o in self._list("chunks"):
            name = o["Key"].rsplit("/", 1)[-1]
            if HEX64.match(name) and (older_than_s <= 0 or o["LastModified"] < cutoff):
                yield name

    def flush(self) -> None:
        pass   # a successful PUT is durable

    # -- manifests ------------------------------------------------------------------------------
    def put_manifest(self, snapshot_id: str, data: bytes) -> None:
        self._mark_format()
        self._put(self._key("manifests", manifest_name(snapshot_id, self.url)), data, f"upload manifest {snapshot_id[:12]}")

    def _mark_format(self) -> None:
        """Before this process first publishes here: refuse a store of a newer format, and record
        ours in one that has none or an older one (it names the chunker of the newest chunks). Chunk
        keys are the same in all formats."""
        if getattr(self, "_format_checked", False):
            return
        try:
            if parse_format(self._get(self._key("format"), "store format"), self.url) < STORE_FORMAT:
                self._put(self._key("format"), format_record(), "write the store format")
        except NotFound:
            self._put(self._key("format"), format_record(), "write the store format")
        self._format_checked = True

    def get_manifest(self, snapshot_id: str) -> bytes:
        try:
            return self._get(self._key("manifests", manifest_name(snapshot_id, self.url)), f"snapshot {snapshot_id[:12]}")
        except NotFound:
            raise NotFound(f"no snapshot {snapshot_id[:12]} in the store {self.url}") from None

    def has_manifest(self, snapshot_id: str) -> bool:
        return is_snapshot_id(snapshot_id) and self._exists(self._key("manifests", snapshot_id))

    def delete_manifest(self, snapshot_id: str) -> None:
        self._delete(self._key("manifests", manifest_name(snapshot_id, self.url)))

    def list_manifests(self) -> list[ManifestInfo]:
        out = [ManifestInfo(o["Key"].rsplit("/", 1)[-1], o["Size"], o["LastModified"])
               for o in self._list("manifests") if HEX64.match(o["Key"].rsplit("/", 1)[-1])]
        return sorted(out, key=lambda m: (m.created_at, m.id))

    # -- names ----------------------------------------------------------------------------------
    def get_ref(self, name: str) -> str | None:
        try:
            return self._get(self._key("refs", check_name(name)), f"name {name}").decode().strip() or None
        except NotFound:
            return None

    def set_ref(self, name: str, snapshot_id: str) -> None:
        self._put(self._key("refs", check_name(name)), snapshot_id.encode() + b"\n", f"write name {name}")

    def create_ref(self, name: str, snapshot_id: str) -> str:
        """S3's conditional put: two `snapshot create --name N` at the same moment cannot both win."""
        import time
        from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError
        key = self._key("refs", check_name(name))
        for attempt in range(5):
            try:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=snapshot_id.encode() + b"\n", IfNoneMatch="*")
                return snapshot_id
            except ParamValidationError:   # a botocore without conditional puts: check, then write
                self.set_ref(name, snapshot_id)
                return snapshot_id
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code == "NotImplemented":   # an S3-compatible store without them: the same
                    self.set_ref(name, snapshot_id)
                    return snapshot_id
                if code not in ("PreconditionFailed", "ConditionalRequestConflict"):
                    raise self._error(exc, f"write name {name}") from None
            except BotoCoreError as exc:
                raise self._error(exc, f"write name {name}") from None
            held = self.get_ref(name)   # taken: say what it holds (a write in flight, or removed since: again)
            if held is not None:
                return held
            time.sleep(0.1 * (attempt + 1))
        raise self._error(RuntimeError("the name kept changing under this write"), f"write name {name}")

    def delete_ref(self, name: str) -> None:
        self._delete(self._key("refs", check_name(name)))

    def list_refs(self) -> dict[str, str]:
        names = [o["Key"].rsplit("/", 1)[-1] for o in self._list("refs")]
        return {n: self.get_ref(n) or "" for n in sorted(names)}

    def clean_tmp(self, older_than_s: float) -> int:
        return 0


def presigning_client(session, region: str | None):
    """An S3 client whose links are Signature Version 4, for the bucket's own region: S3 refuses
    the older links botocore makes by default for objects encrypted with KMS keys (the stack's
    bucket), so every direct pull would fail and the controller stream everything itself."""
    from botocore.config import Config
    return session.client("s3", region_name=region, endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None,
                          config=Config(signature_version="s3v4"))


def bucket_region(client, bucket: str) -> str | None:
    """Where `bucket` lives (its HEAD says), else the client's own region."""
    try:
        head = client.head_bucket(Bucket=bucket)
        return head.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region") or \
            client.meta.region_name
    except Exception:  # noqa: BLE001 — a link for the client's region is the best left to try
        return client.meta.region_name
