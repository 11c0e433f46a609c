"""The index's Lance tables as one :class:`~mvstore.store.Index` object sees them (:class:`Tables`): the docs
table, the codec states (:class:`~mvstore.store._state.StateTable`) and the version the object reads now
(a :class:`~mvstore.store._view.View`), which writes, ``checkout`` and maintenance replace."""

from __future__ import annotations

from typing import Any

import lance

from .. import spec as spec_mod
from ..exceptions import IndexCorruptedError, InvalidArgumentError, UpgradeRequiredError
from . import _integrity
from ._fs import Location
from ._layout import DOCS, ROW_CHECKSUM, STATE, STATE_KEY, checksum_column_of, has_versions
from ._state import CodecState, StateTable, open_table
from ._view import CodeCache, View, Written


class Tables:
    """The docs and codec-state tables of the index at ``loc`` and the :class:`View` read now (``view``;
    ``pinned``: opened at a version for reading). ``code_cache``: the stage-2 code cache of
    ``open(uri, memory="bounded")`` (None: codes in memory)."""

    def __init__(
        self, loc: Location, dim: int, options: dict[str, Any], created_spec: spec_mod.Spec | None,
        version: int | None, code_cache: CodeCache | None,
    ):  # fmt: skip
        self.loc = loc
        self.dim = dim
        self.options = options
        self.code_cache = code_cache
        self.states = StateTable(loc, dim, options, created_spec)
        self.pinned = version is not None
        self.view = self.make_view(version)

    @property
    def spec(self) -> spec_mod.Spec | None:
        """The spec of the view's codec state; before the first add, the spec given to create() (None for
        ``spec="auto"``, which the first add or train picks)."""
        st = self.view.state
        return st.spec if st is not None else self.states.created_spec

    def docs_exists(self) -> bool:
        return has_versions(self.loc, DOCS)

    def latest_docs(self) -> lance.LanceDataset | None:
        """The latest version of the docs table; None before the first add."""
        if not self.docs_exists():
            return None
        return self.docs()

    def docs(self) -> lance.LanceDataset:
        """The latest version of the docs table, which a caller knows exists."""
        return open_table(self.loc, DOCS, "docs table")

    def new_view(
        self, version: int, ds: lance.LanceDataset | None, state: CodecState | None, base: View | None = None,
        written: Written | None = None,
    ) -> View:  # fmt: skip
        """The read state of ``version`` (derived from ``base``'s when it can be, see :class:`View`), in this
        object's memory mode."""
        return View(version, ds, state, self.loc, base, written, self.code_cache)

    def checkout(self, version: int | None) -> None:
        """Read ``version`` (None: the latest, and follow writes again)."""
        self.view = self.make_view(version, self.view)
        self.pinned = version is not None

    def make_view(self, version: int | None, base: View | None = None) -> View:
        """The view of ``version`` (None: the latest), its integrity checked on open."""
        ds = self.latest_docs()
        sds = self.states.dataset()
        _integrity.check_open(self.loc, STATE, None if sds is None else sds.version)
        if version is not None:
            if ds is None or version == 0:
                if version != 0:
                    raise InvalidArgumentError(
                        f"version {version} does not exist: this index has no versions yet; open it with version=None"
                    )
                _integrity.check_open(self.loc, DOCS, None)
                return self.new_view(0, None, self.states.pending())
            known = [
                v["version"] for v in _integrity.read_or_corrupted(ds.versions, "the docs table's versions")
            ]
            if version not in known:
                raise InvalidArgumentError(
                    f"version {version} does not exist; available versions: {known} (index.versions())"
                )
        _integrity.check_open(self.loc, DOCS, version if version is not None or ds is None else ds.version)
        if ds is None:
            return self.new_view(0, None, self.states.pending())
        if version is not None:
            ds = _integrity.read_or_corrupted(
                lambda: ds.checkout_version(version), f"docs table version {version}"
            )
        self._check_format(ds, version)
        return self.new_view(ds.version, ds, self.states.load(self._state_id(ds)), base)

    def _check_format(self, ds: lance.LanceDataset, version: int | None) -> None:
        """UpgradeRequiredError / InvalidArgumentError for a docs version still in format 2."""
        if ROW_CHECKSUM in ds.schema.names or checksum_column_of(ds.schema) is None:
            return
        if version is not None and version != ds.latest_version:
            raise InvalidArgumentError(
                f"version {version} was written in format 2, before this index was upgraded, and this mvstore "
                "cannot read it; open a version written since the upgrade (index.versions())"
            )
        raise UpgradeRequiredError(
            f"the docs table of {self.loc.uri!r} still has format-2 column names (an upgrade was interrupted?): "
            f"run `mvstore upgrade {self.loc.uri}` or mvstore.upgrade(uri) to finish it"
        )

    @staticmethod
    def _state_id(ds: lance.LanceDataset) -> int:
        """The codec state a docs version records (its schema metadata)."""
        raw = (ds.schema.metadata or {}).get(STATE_KEY)
        try:
            return int(raw)  # type: ignore[arg-type]  # None or junk: the error below
        except (TypeError, ValueError):
            raise IndexCorruptedError(
                f"docs table version {ds.version} does not record its codec state ({STATE_KEY.decode()} schema "
                "metadata); the index is corrupted: rebuild it"
            ) from None
