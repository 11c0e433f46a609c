"""Codec states: :class:`CodecState` (a fitted codec and its stage-1 centroids) and :class:`StateTable`, the
index's codec-state Lance table (``codec.lance``: load, find the state an explicit train made, fit and store a
new one). Layout of the rows: docs/LAYOUT.md ("Codec state")."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import lance
import numpy as np
import pyarrow as pa

from .. import spec as spec_mod
from ..exceptions import IndexCorruptedError
from ..ragged import Ragged
from . import _integrity
from ._encode import sq_error
from ._fs import Location
from ._layout import STATE, has_versions, parse_state, state_table


@dataclasses.dataclass
class CodecState:
    """A loaded codec state: the fitted pipeline, stage-1 centroids and training facts."""

    state_id: int
    codec: Any
    centroids: np.ndarray
    meta: dict[str, Any]
    spec: Any  # the parsed spec (mvstore.spec.Spec) the codec was fit for: pooling + codec stages


def open_table(loc: Location, name: str, what: str) -> lance.LanceDataset:
    """Open one of the index's Lance tables; unreadable data is IndexCorruptedError."""
    uri = loc.table(name)
    try:
        return loc.dataset(name)
    except BaseException as e:
        if not _integrity.lance_failure(e):
            raise
        raise IndexCorruptedError(
            f"the {what} {uri} cannot be opened ({str(e).splitlines()[0][:200]}); "
            "the index is corrupted: restore it from a backup or rebuild it"
        ) from e


def state_from_arrays(sid: int, arrays: dict[str, np.ndarray], meta: dict[str, Any], dim: int) -> CodecState:
    """A stored codec state (its arrays and meta, checksum checked) -> the fitted codec and stage-1 centroids."""
    _integrity.check_state(sid, arrays, meta)
    try:  # each state records its spec (spec="auto" picks one per index)
        spec = spec_mod.parse(meta["spec"])
        codec = spec_mod.build_pipeline(spec, dim)
        codec.set_state(
            {k[6:]: v for k, v in arrays.items() if k.startswith("codec.")}, meta.get("codec", {})
        )
    except (KeyError, ValueError, TypeError) as e:
        raise IndexCorruptedError(
            f"codec state {sid} does not fit its spec {meta.get('spec')!r}: {e}; rebuild it"
        ) from e
    cent = arrays.get("index.centroids")
    if cent is None and codec.has_coarse:
        cent = np.ascontiguousarray(codec.coarse_centroids, np.float32)
    if cent is None:
        raise IndexCorruptedError(f"codec state {sid} has no stage-1 centroids; rebuild the index")
    return CodecState(sid, codec, cent, meta, spec)


def _stage1_centroids(
    codec: Any, t: np.ndarray, everything: np.ndarray, n_total: int, opts: dict[str, Any], rng: Any
) -> tuple[np.ndarray | None, str, int]:
    """The stage-1 centroids of a state: (None, "codec", n) when the codec's own coarse centroids serve (rq),
    else k-means centroids fit on the transformed vectors ``t`` (a larger sample of ``everything`` when ``t``
    is too small for the centroid count): (centroids, "kmeans", n)."""
    from ..search.postings import (
        CENTROID_SAMPLE,
        MIN_POINTS_PER_CENTROID,
        default_n_centroids,
        fit_centroids,
    )

    if codec.has_coarse:
        return None, "codec", int(codec.coarse_centroids.shape[0])
    n_c = opts.get("n_centroids") or default_n_centroids(max(n_total, 1))
    # k-means wants CENTROID_SAMPLE points per centroid (faiss warns below 39): the codec's sample may
    # be too small for that, so the centroids get their own, larger one (measured on SciFact: 4096
    # centroids fit on 156k instead of 65k vectors recall more of the exhaustive top-10 at equal cost)
    n_fit = min(len(everything), max(len(t), CENTROID_SAMPLE * n_c))
    if n_fit > len(t):
        pick = np.sort(rng.choice(len(everything), n_fit, replace=False)) if n_fit < len(everything) else None
        t = codec.transform(everything if pick is None else everything[pick])
    n_c = int(min(n_c, 2 ** int(np.floor(np.log2(max(len(t) // MIN_POINTS_PER_CENTROID, 1))))))
    return fit_centroids(t, n_c, seed=opts.get("seed", 0)), "kmeans", n_c


class StateTable:
    """The codec-state table of the index at ``loc`` (``codec.lance``) and the states loaded from it (each
    loaded once per Index object). ``created_spec``: the spec create() was given (None for ``spec="auto"``)."""

    def __init__(self, loc: Location, dim: int, options: dict[str, Any], created_spec: spec_mod.Spec | None):
        self.loc = loc
        self.dim = dim
        self.options = options
        self.created_spec = created_spec
        self._loaded: dict[int, CodecState] = {}

    @property
    def uri(self) -> str:
        return self.loc.table(STATE)

    def dataset(self) -> lance.LanceDataset | None:
        """The latest version of the table; None when no state was stored."""
        if not has_versions(self.loc, STATE):  # absent, or its first commit was killed: no state was stored
            return None
        return open_table(self.loc, STATE, "codec state table")

    def stored(self, sid: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The arrays and meta of state ``sid`` as stored (IndexCorruptedError when it cannot be read)."""
        sds = self.dataset()
        if sds is None:
            raise IndexCorruptedError(
                f"the docs table refers to codec state {sid} but {self.uri} is missing; "
                "the index is corrupted: restore it from a backup or rebuild it"
            )
        try:
            tbl = sds.to_table(filter=f"state_id = {int(sid)}")
        except BaseException as e:
            if not _integrity.lance_failure(e):
                raise
            raise IndexCorruptedError(f"codec state {sid} cannot be read ({e}); rebuild the index") from e
        return parse_state(tbl, sid, self.uri)

    def load(self, sid: int) -> CodecState:
        """State ``sid``, read and checked on first use."""
        if sid in self._loaded:
            return self._loaded[sid]
        arrays, meta = self.stored(sid)
        st = self._loaded[sid] = state_from_arrays(sid, arrays, meta, self.dim)
        return st

    def reload(self, sid: int) -> CodecState:
        """State ``sid`` read and checked again (``verify``)."""
        self._loaded.pop(sid, None)
        return self.load(sid)

    def pending(self) -> CodecState | None:
        """Before the first add: the latest state made by an explicit train, if any."""
        sds = self.dataset()
        if sds is None:
            return None
        meta_rows = sds.to_table(columns=["state_id", "data"], filter="name = '__meta__'")
        best = None
        for sid, data in zip(meta_rows.column("state_id").to_pylist(), meta_rows.column("data").to_pylist()):
            if json.loads(data).get("explicit") is True and (best is None or sid > best):
                best = sid
        return None if best is None else self.load(best)

    def next_id(self) -> int:
        sds = self.dataset()
        if sds is None or sds.count_rows() == 0:
            return 1
        return int(pa.compute.max(sds.to_table(columns=["state_id"]).column("state_id")).as_py()) + 1

    def pick_spec(self, docs: Ragged) -> tuple[spec_mod.Spec, dict[str, Any] | None]:
        """The spec a first codec state is fit for: create()'s, or for ``spec="auto"`` the pick of
        :func:`mvstore.tune.auto_spec` on ``docs`` (with what it measured, kept in the state)."""
        if self.created_spec is not None:
            return self.created_spec, None
        from ..tune import auto_spec

        res = auto_spec(docs, self.options["max_bytes_per_token"], seed=self.options.get("seed", 0))
        info = {
            "budget": res.budget, "spec": res.spec, "fidelity": res.fidelity, "bytes_per_token": res.bytes_per_token,
            "seconds": res.seconds, "sample_docs": res.n_docs, "sample_tokens": res.n_tokens,
            "pseudo_queries": res.n_queries, "measure": res.measure, "exact_fidelity": res.exact_fidelity,
            "table": [{k: r[k] for k in ("spec", "bytes_per_token", "fidelity", "agreement", "known_item", "within_budget")}
                      for r in res.table],
        }  # fmt: skip
        return spec_mod.parse(res.spec), info

    def fit(
        self,
        vectors: np.ndarray,
        n_total: int,
        *,
        spec: spec_mod.Spec,
        explicit: bool,
        auto: dict[str, Any] | None = None,
    ) -> CodecState:
        """Fit the codec and stage-1 centroids for ``spec`` on a sample of (pooled) vectors and store them as a
        new state (one commit of this table)."""
        opts = self.options
        rng = np.random.default_rng(opts.get("seed", 0))
        everything = vectors
        if len(vectors) > opts["train_size"]:
            vectors = vectors[np.sort(rng.choice(len(vectors), opts["train_size"], replace=False))]
        codec = spec_mod.build_pipeline(spec, self.dim).fit(vectors)
        t = codec.transform(vectors)
        train_err = None
        if codec.dim_out == t.shape[1]:  # sparse maps decode into another (V-dim) space: no error to measure
            train_err = float(sq_error(vectors, t, codec.decode(codec.encode(vectors))).mean())
        energy = float(np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64).mean())
        arrays = {"codec." + k: v for k, v in codec.get_state()[0].items()}
        cent, source, n_c = _stage1_centroids(codec, t, everything, n_total, opts, rng)
        if cent is not None:
            arrays["index.centroids"] = cent
        meta = {
            "spec": str(spec),
            "auto": auto,
            "codec": codec.get_state()[1],
            "explicit": explicit,
            "terms": source,
            "n_centroids": n_c,
            "train_vectors": int(len(vectors)),
            "train_error": train_err,
            "train_energy": energy,
        }
        meta["checksum"] = _integrity.state_digest(arrays, meta)
        sid = self.next_id()
        tbl = state_table(sid, arrays, meta)
        self.loc.write_dataset(tbl, STATE, mode="create" if self.dataset() is None else "append")
        if cent is None:
            cent = np.ascontiguousarray(codec.coarse_centroids, np.float32)
        st = self._loaded[sid] = CodecState(sid, codec, cent, meta, spec)
        return st
