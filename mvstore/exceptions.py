"""Errors raised by mvstore. Each subclasses the builtin a caller would expect (ValueError, TypeError,
RuntimeError) so ``except ValueError`` keeps working, and each message names the problem and the fix."""

from __future__ import annotations

__all__ = [
    "MvstoreError",
    "InvalidVectorsError",
    "DimensionMismatchError",
    "InvalidDtypeError",
    "SpecError",
    "NotFittedError",
    "DuplicateIdError",
    "IndexCorruptedError",
    "DeviceUnavailableError",
    "MissingDependencyError",
    "InvalidMetadataError",
    "FilterError",
    "UnknownIdError",
    "IndexExistsError",
    "InvalidOperationError",
    "InvalidArgumentError",
    "SearchParamsError",
    "InvalidIdError",
    "IndexBusyError",
    "StorageUnreachableError",
    "VersionCleanedUpError",
    "ModelFormatError",
    "TuneError",
    "ReportError",
    "RerankerError",
    "UpgradeRequiredError",
    "UsageError",
    "DatasetFormatError",
    "PlaidFormatError",
]


class MvstoreError(Exception):
    """Base class of every mvstore error."""


class InvalidVectorsError(MvstoreError, ValueError):
    """Token vectors that cannot be indexed or searched: NaN/Inf, empty documents, bad shapes."""


class DimensionMismatchError(InvalidVectorsError):
    """Vectors whose dimension differs from what the index, codec or batch expects."""


class InvalidDtypeError(MvstoreError, TypeError):
    """Inputs of the wrong type or dtype (e.g. integer token vectors)."""


class SpecError(MvstoreError, ValueError):
    """A compression spec string that does not parse or is not valid for the given dimension."""


class NotFittedError(MvstoreError, RuntimeError):
    """A codec or index used before it was trained."""


class DuplicateIdError(MvstoreError, ValueError):
    """Document ids that repeat within a batch or already exist in the index."""


class IndexCorruptedError(MvstoreError, RuntimeError):
    """A path that is not an mvstore index, or one whose stored state cannot be read."""


class DeviceUnavailableError(MvstoreError, RuntimeError):
    """An explicitly requested device (e.g. ``"cuda"``) that is not available."""


class MissingDependencyError(MvstoreError, ImportError):
    """An optional dependency that is not installed; the message gives the pip command."""


class InvalidMetadataError(MvstoreError, ValueError):
    """Document metadata that cannot be stored: wrong length, unknown/reserved columns, bad types."""


class FilterError(MvstoreError, ValueError):
    """A ``where=`` filter or ``columns=`` selection naming columns the index does not have."""


class UnknownIdError(MvstoreError, ValueError):
    """Ids that are not in the index (e.g. deleting an id that was never added)."""


class IndexExistsError(MvstoreError, FileExistsError):
    """``create`` on a path that already holds an index (or other files)."""


class InvalidOperationError(MvstoreError, ValueError):
    """An operation this index cannot do in its current state (e.g. writing to a time-travel version)."""


class InvalidArgumentError(MvstoreError, ValueError):
    """An argument with a value the call cannot take (e.g. ``seed=-1``, a version that does not exist)."""


class SearchParamsError(InvalidArgumentError):
    """A search-time knob (``k``, a :class:`~mvstore.search.params.SearchParams` field) with a value it cannot
    take."""


class InvalidIdError(MvstoreError, ValueError):
    """A document id the index cannot store: an integer outside int64, a string that is not valid UTF-8."""


class IndexBusyError(MvstoreError, RuntimeError):
    """Another process held the index's write lock for longer than the wait allows."""


class StorageUnreachableError(MvstoreError, OSError):
    """The object store an index URI names cannot be reached or refuses the request (endpoint, credentials,
    bucket): the message names the URI and the storage_options to check."""


class VersionCleanedUpError(MvstoreError, RuntimeError):
    """The version an :class:`Index` reads was deleted by ``optimize(cleanup=True)`` (here or in another
    process); ``index.refresh()`` moves to the latest version."""


class ModelFormatError(MvstoreError, ValueError):
    """A model directory an encoder cannot run: missing files, or modules it does not implement."""


class TuneError(MvstoreError, ValueError):
    """Tuning inputs that cannot work: a non-positive budget, a sample too small for ``k``, no spec fits."""


class ReportError(MvstoreError, ValueError):
    """Rows that cannot be reported: unreadable JSON lines, missing metric columns, nothing to plot."""


class RerankerError(MvstoreError, ValueError):
    """A LanceDB result the reranker cannot score: missing id/text column, ids unknown to the index."""


class UpgradeRequiredError(IndexCorruptedError):
    """An index written in an older on-disk format that this mvstore upgrades in place (``mvstore upgrade
    INDEX`` or :func:`mvstore.upgrade`) before it reads or writes it."""


class DatasetFormatError(MvstoreError, ValueError):
    """A dataset file that does not hold what its format says (e.g. a BEIR corpus line that is not JSON, a qrels
    grade that is not an integer): the message names the file, the line and the expected form."""


class UsageError(MvstoreError, ValueError):
    """A command-line input that cannot work: flags that do not go together, an input file without the columns
    or arrays the command needs (the message says what to pass instead)."""


class PlaidFormatError(MvstoreError, ValueError):
    """A PLAID index (fast-plaid / PyLate / Stanford ColBERT) :func:`mvstore.import_plaid` cannot read: not a PLAID
    directory, missing or damaged files, an id mapping that does not match its documents."""


def require(module: str, pip_name: str | None = None, extra: str | None = None):
    """Import an optional dependency or raise MissingDependencyError with the exact install command."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:  # pragma: no cover - exercised via monkeypatch in tests
        cmd = f'pip install "mvstore[{extra}]"' if extra else f"pip install {pip_name or module}"
        raise MissingDependencyError(
            f"{module} is required for this feature but is not installed: run `{cmd}`"
        ) from e
