"""Where an index lives: a local directory or an object-store prefix (``s3://``, ``gs://``, ``az://``).

:class:`Location` is the one place that touches the index's files outside Lance: the manifest, the integrity
records, the listings of Lance's ``_versions/`` and the write lock. A local directory keeps exactly the
POSIX behaviour it always had (temp file + fsync + rename, ``flock``); an object store goes through pyarrow's
filesystem layer, where one PUT is atomic (a killed upload leaves no object), and the write lock is a lease
committed through Lance's own conditional commit (:class:`LeaseLock`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from ..exceptions import IndexBusyError, InvalidArgumentError, InvalidDtypeError

#: URI schemes handed to pyarrow's filesystem layer and to Lance; anything else with "://" is refused
REMOTE_SCHEMES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")
LEASE_TABLE = "lock.lance"  # object stores: the lease table (local directories: ``mvstore.lock``, flock)
#: object stores: a writer's lease lasts this long unless renewed (its heartbeat renews it every quarter)
LEASE_S = 60.0

# Lance / object_store storage option names -> pyarrow S3FileSystem arguments (the rest only concern Lance)
_S3_OPTIONS = {
    "aws_access_key_id": "access_key", "access_key_id": "access_key",
    "aws_secret_access_key": "secret_key", "secret_access_key": "secret_key",
    "aws_session_token": "session_token", "session_token": "session_token", "token": "session_token",
    "aws_region": "region", "region": "region",
    "aws_endpoint": "endpoint_override", "endpoint": "endpoint_override",
    "aws_endpoint_url": "endpoint_override", "endpoint_url": "endpoint_override",
}  # fmt: skip


def split_uri(uri: Any) -> tuple[str, bool]:
    """``uri`` -> (normalized URI, is_local): a local path made absolute, or ``scheme://bucket/prefix``."""
    if not isinstance(uri, (str, os.PathLike)):
        raise InvalidDtypeError(
            f"uri must be a directory path or an object-store URI (str or Path), got {type(uri).__name__}"
        )
    s = os.fspath(uri)
    if not isinstance(s, str):
        raise InvalidDtypeError(
            f"uri must be a str path, got {type(s).__name__} {s!r:.80}; decode it (os.fsdecode)"
        )
    if not s.strip():
        raise InvalidArgumentError("uri is an empty string; pass the index's directory path or an s3:// URI")
    if "://" in s and not s.startswith("file://"):
        scheme, rest = s.split("://", 1)
        if scheme.lower() not in REMOTE_SCHEMES:
            raise InvalidArgumentError(
                f"uri {s!r}: the scheme {scheme!r} is not supported; use a local path or one of "
                + ", ".join(f"{x}://" for x in REMOTE_SCHEMES)
            )
        rest = rest.strip("/")
        if not rest or "/" not in rest:
            raise InvalidArgumentError(
                f"uri {s!r} names no path inside the bucket; pass e.g. {scheme}://bucket/indexes/my-index"
            )
        return f"{scheme.lower()}://{rest}", False
    return os.path.abspath(s.removeprefix("file://")), True


class Location:
    """The root of one index (``uri``) and the options to reach it (``storage_options``, passed to Lance as
    given). File names are relative to the root, ``/``-separated."""

    def __init__(self, uri: Any, storage_options: dict[str, str] | None = None):
        self.uri, self.local = split_uri(uri)
        if storage_options is not None and (
            not isinstance(storage_options, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in storage_options.items())
        ):
            raise InvalidDtypeError(
                f"storage_options must be a dict of str to str (Lance's object-store options, e.g. "
                f"{{'aws_region': 'us-east-1'}}), got {storage_options!r:.120}"
            )
        self.storage_options = dict(storage_options) if storage_options else None
        self._fs: Any = None

    # ------------------------------------------------------------------------------------------ Lance
    def table(self, name: str) -> str:
        """The URI Lance opens for the table ``name`` (e.g. ``docs.lance``)."""
        return os.path.join(self.uri, name) if self.local else f"{self.uri}/{name}"

    def dataset(self, name: str, version: int | None = None) -> Any:
        import lance

        return lance.dataset(self.table(name), version=version, storage_options=self.storage_options)

    def write_dataset(self, data: Any, name: str, **kw: Any) -> Any:
        import lance

        return lance.write_dataset(data, self.table(name), storage_options=self.storage_options, **kw)

    # ------------------------------------------------------------------------------------------ files
    @property
    def fs(self) -> Any:
        """pyarrow filesystem of an object store (built on first use)."""
        if self._fs is None:
            self._fs = _filesystem(self.uri, self.storage_options or {})
        return self._fs

    def _path(self, rel: str) -> str:
        if self.local:
            return os.path.join(self.uri, *rel.split("/")) if rel else self.uri
        return self.uri.split("://", 1)[1] + ("/" + rel if rel else "")

    def exists(self, rel: str = "") -> bool:
        if self.local:
            return os.path.exists(self._path(rel))
        from pyarrow.fs import FileType

        return self.fs.get_file_info(self._path(rel)).type != FileType.NotFound

    def isdir(self, rel: str = "") -> bool:
        if self.local:
            return os.path.isdir(self._path(rel))
        from pyarrow.fs import FileType

        return self.fs.get_file_info(self._path(rel)).type == FileType.Directory

    def listdir(self, rel: str = "") -> list[str]:
        """Names directly under ``rel``; [] when it does not exist."""
        if self.local:
            p = self._path(rel)
            return os.listdir(p) if os.path.isdir(p) else []
        from pyarrow.fs import FileSelector

        infos = self.fs.get_file_info(FileSelector(self._path(rel), allow_not_found=True))
        return [i.base_name for i in infos]

    def size(self, rel: str) -> int:
        """Bytes of a file; FileNotFoundError when it is missing."""
        if self.local:
            return os.path.getsize(self._path(rel))
        from pyarrow.fs import FileType

        info = self.fs.get_file_info(self._path(rel))
        if info.type != FileType.File:
            raise FileNotFoundError(self._path(rel))
        return int(info.size)

    def mtime(self, rel: str) -> float:
        if self.local:
            return os.stat(self._path(rel)).st_mtime
        info = self.fs.get_file_info(self._path(rel))
        if info.mtime is None:
            raise FileNotFoundError(self._path(rel))
        return info.mtime.timestamp()

    def read(self, rel: str) -> bytes:
        """A whole file; FileNotFoundError when it is missing."""
        if self.local:
            with open(self._path(rel), "rb") as f:
                return f.read()
        try:
            with self.fs.open_input_stream(self._path(rel)) as f:
                return f.read()
        except OSError as e:
            if not self.exists(rel):
                raise FileNotFoundError(self._path(rel)) from e
            raise

    def sha256(self, rel: str) -> str:
        h = hashlib.sha256()
        if self.local:
            with open(self._path(rel), "rb") as f:
                while chunk := f.read(1 << 22):
                    h.update(chunk)
        else:
            with self.fs.open_input_stream(self._path(rel)) as f:
                while chunk := f.read(1 << 22):
                    h.update(chunk)
        return h.hexdigest()

    def write_atomic(self, rel: str, data: bytes) -> None:
        """Replace ``rel`` with ``data`` all at once. Local: temp file, fsync, rename, fsync of the directory;
        object store: one PUT (an object appears complete or not at all)."""
        if not self.local:
            with self.fs.open_output_stream(self._path(rel)) as f:
                f.write(data)
            return
        path = self._path(rel)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(os.path.dirname(path), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def remove(self, rel: str) -> None:
        """Delete a file; a missing one is fine."""
        with contextlib.suppress(FileNotFoundError):
            if self.local:
                os.remove(self._path(rel))
            elif self.exists(rel):
                self.fs.delete_file(self._path(rel))

    def makedirs(self, rel: str = "") -> None:
        if self.local:
            os.makedirs(self._path(rel), exist_ok=True)  # object stores have no directories to make

    # ------------------------------------------------------------------------------------- the lock
    @contextlib.contextmanager
    def write_lock(self) -> Iterator[None]:
        """The index's cross-process write lock: ``flock`` on a local directory, a :class:`LeaseLock` on an
        object store. Waits up to ``_layout.WRITE_LOCK_TIMEOUT_S`` seconds, then raises IndexBusyError."""
        from ._layout import write_lock

        if self.local:
            with write_lock(self.uri):
                yield
        else:
            with LeaseLock(self):
                yield

    def __repr__(self) -> str:
        return f"Location({self.uri!r})"


def at(root: Any) -> Location:
    """``root`` as a Location (a plain path or URI: no storage options)."""
    return root if isinstance(root, Location) else Location(root)


def _filesystem(uri: str, options: dict[str, str]) -> Any:
    """pyarrow filesystem for an object-store URI; S3 takes the Lance storage options it understands
    (credentials, region, endpoint, ``allow_http``), gs/az use pyarrow's defaults (environment credentials)."""
    import pyarrow.fs as pfs

    scheme = uri.split("://", 1)[0]
    if scheme in ("s3", "s3a"):
        kw: dict[str, Any] = {}
        for k, v in options.items():
            if k.lower() in _S3_OPTIONS:
                kw[_S3_OPTIONS[k.lower()]] = v
        ep = kw.get("endpoint_override")
        if ep and "://" in ep:
            scheme_ep, host = ep.split("://", 1)
            kw["endpoint_override"], kw["scheme"] = host.rstrip("/"), scheme_ep
        elif ep and str(options.get("allow_http", "")).lower() == "true":
            kw["scheme"] = "http"
        # delayed open: a small file is uploaded by one PutObject on close, not a multipart upload
        return pfs.S3FileSystem(allow_delayed_open=True, **kw)
    fs, _ = pfs.FileSystem.from_uri(uri.replace("gcs://", "gs://", 1))
    return fs


_LEASE_SCHEMA = pa.schema([("holder", pa.string()), ("expires", pa.float64())])


class LeaseLock:
    """The write lock of an index on an object store, where ``flock`` does not exist.

    ``lock.lance`` is a one-row Lance table ``(holder, expires)``. Taking the lock commits an overwrite naming
    this writer at the version just read, with no retry: Lance commits a version with a conditional PUT
    (``If-None-Match``), so of two writers that read the same free lock exactly one commits and the other gets
    a commit conflict and reads again. While held, a heartbeat thread renews the lease every ``LEASE_S / 4``
    (again conditional on the holder's own last version); the release commits ``holder=""``. A writer that
    dies (kill -9) stops renewing: its lease expires ``LEASE_S`` seconds later and the next writer takes it.
    A holder that could not renew (paused longer than ``LEASE_S``) may have lost the lock to another writer:
    its release raises IndexBusyError saying so, and the index should be checked (``mvstore verify``)."""

    def __init__(self, loc: Location):
        self.loc = loc
        self.holder = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.version = 0
        self.lost = False
        self._stop = threading.Event()
        self._mutex = threading.Lock()
        self._thread: threading.Thread | None = None

    def _read(self) -> tuple[int, str, float]:
        """(version, holder, expires) of the lease table; version 0 when it does not exist yet."""
        if not any(f.endswith(".manifest") for f in self.loc.listdir(f"{LEASE_TABLE}/_versions")):
            return 0, "", 0.0
        ds = self.loc.dataset(LEASE_TABLE)
        row = ds.to_table().to_pylist()
        return ds.version, (row[0]["holder"] if row else ""), (row[0]["expires"] if row else 0.0)

    def _commit(self, holder: str, read_version: int) -> int:
        """Overwrite the lease row at ``read_version`` (0: create the table); raises on any concurrent commit."""
        import lance

        tbl = pa.table({"holder": [holder], "expires": [time.time() + LEASE_S]}, schema=_LEASE_SCHEMA)
        if read_version == 0:
            return self.loc.write_dataset(tbl, LEASE_TABLE, mode="create").version
        uri = self.loc.table(LEASE_TABLE)
        so = self.loc.storage_options
        frags = lance.fragment.write_fragments(tbl, uri, schema=_LEASE_SCHEMA, storage_options=so)
        op = lance.LanceOperation.Overwrite(_LEASE_SCHEMA, frags)
        return lance.LanceDataset.commit(
            uri, op, read_version=read_version, max_retries=0, storage_options=so
        ).version

    def __enter__(self) -> LeaseLock:
        from ._layout import WRITE_LOCK_TIMEOUT_S

        deadline = time.monotonic() + WRITE_LOCK_TIMEOUT_S
        while True:
            v, holder, expires = self._read()
            if holder and expires > time.time():
                if time.monotonic() >= deadline:
                    raise IndexBusyError(
                        f"another writer ({holder}) has held the write lock of {self.loc.uri!r} for more than "
                        f"{WRITE_LOCK_TIMEOUT_S:g} s; wait for it to finish (or stop it) and retry the write"
                    )
                time.sleep(min(0.2, max(expires - time.time(), 0.01)))
                continue
            try:
                self.version = self._commit(self.holder, v)
                break
            except Exception as e:  # another writer committed first (a conflict, or the table's creation)
                if not _lost_race(e):
                    raise
        self._thread = threading.Thread(target=self._renew, daemon=True, name="mvstore-lease")
        self._thread.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_S / 4):
            with self._mutex:
                try:
                    self.version = self._commit(self.holder, self.version)
                except Exception as e:
                    if not _lost_race(e):
                        continue  # a transient store error: the next beat tries again within the lease
                    self.lost = True
                    return

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._mutex:
            if not self.lost:
                try:
                    self._commit("", self.version)
                except Exception as e:
                    if not _lost_race(e):
                        raise
                    self.lost = True
        if self.lost and exc[0] is None:
            raise IndexBusyError(
                f"this writer's lease on the write lock of {self.loc.uri!r} expired while it wrote (it was paused "
                f"for more than {LEASE_S:g} s) and another writer took the lock: its commit may have raced "
                "another write; check the index with `mvstore verify` and index.stats() before writing again"
            )


def _lost_race(e: BaseException) -> bool:
    """Whether a Lance commit failed because another commit came first."""
    name = type(e).__name__
    text = str(e).lower()
    return name == "CommitConflictError" or "conflict" in text or "already exists" in text
