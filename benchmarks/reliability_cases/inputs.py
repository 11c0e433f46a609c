"""Reliability group "inputs": user mistakes and unusual-but-valid inputs, tried as a new user would.

Two kinds of case:

* a **mistake** (NaN vectors, a wrong dim, ``k=0``, ``where=5``, an id beyond int64, a metadata key the index
  has no column for, ...) must raise the expected mvstore error class whose message names the fix (a
  case-specific pattern) and must leave the index at its version. Outcomes: "ok"; "raw_error" when a
  non-mvstore exception, another class, or a message without the fix came out; "silent_wrong" when the
  mistake was accepted without a word or something was committed despite the error.
* a **valid input** (rows of metadata with different keys, ``upsert`` without metadata, ``"My Col"`` in a
  filter, ids at the int64 bounds, unicode ids, a torch query) must store and return exactly what was given,
  checked against a plain-Python oracle. Outcomes: "ok"; "silent_wrong" on any difference; "raw_error" when
  it raised.

``quick`` runs every case once; the full run adds randomized metadata sequences (rows with random subsets
of keys, added and upserted in batches) checked against a dict oracle.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re
import shutil
import traceback
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from mvstore.testing import token_docs

GROUP = "inputs"
DIM = 16


def _docs(n: int, seed: int) -> list[np.ndarray]:
    """``n`` documents of distinct unit token vectors (each doc's own tokens find it first)."""
    return token_docs(n, DIM, seed=seed, lo=3, hi=9, n_centers=0)


class _Ctx:
    """Indexes shared by the cases (a fresh directory per index)."""

    def __init__(self, workdir: pathlib.Path, seed: int):
        self.workdir = workdir
        self.docs = _docs(60, seed)
        self.n = 0

    def new(self, spec: str = "fp16", **kw: Any) -> Any:
        import mvstore.store as ms

        self.n += 1
        kw.setdefault("n_centroids", 4)
        return ms.create(self.workdir / f"ix{self.n}", spec=spec, dim=DIM, **kw)

    def built(self, n: int = 20, **kw: Any) -> Any:
        """An index with ids 0..n-1 and metadata lang (str) / year (int) / "My Col" (str)."""
        idx = self.new(**kw)
        idx.add(list(range(n)), self.docs[:n], metadata=_meta(range(n)))
        return idx


def _meta(ids: Any) -> list[dict[str, Any]]:
    return [{"lang": ("en", "fr", "de")[i % 3], "year": 2000 + i, "My Col": f"v{i % 2}"} for i in ids]


def _stored(idx: Any, columns: list[str]) -> dict[Any, dict[str, Any]]:
    """id -> {column: value} of the index's latest version, read with plain Lance."""
    import lance

    t = lance.dataset(str(pathlib.Path(idx.root) / "docs.lance")).to_table(columns=["id", *columns])
    return {r.pop("id"): r for r in t.to_pylist()}


# ------------------------------------------------------------------------------------------ mistakes
def _mistake(ctx: _Ctx, idx: Any, call: Callable[[], Any], cls_name: str, fix: str) -> tuple[str, str]:
    """Run ``call`` (a user mistake) on ``idx`` (or None) and judge what came out."""
    import mvstore.exceptions as mx

    cls = getattr(mx, cls_name)
    before = None if idx is None else (idx.latest_version, len(idx.refresh()))
    try:
        got = call()
    except mx.MvstoreError as e:
        msg = str(e)
        if not isinstance(e, cls):
            return "raw_error", f"{type(e).__name__} instead of {cls_name}: {msg}"
        if not re.search(fix, msg, re.S):
            return "raw_error", f"{cls_name} without the fix (/{fix}/): {msg}"
        if idx is not None and (idx.latest_version, len(idx.refresh())) != before:
            return (
                "silent_wrong",
                f"the error came after a commit: version/docs {before} -> {idx.version}: {msg}",
            )
        return "ok", f"{cls_name}: {msg}"
    except Exception as e:  # noqa: BLE001 - a non-mvstore exception is the finding
        return "raw_error", f"{type(e).__name__}: {e}"
    return "silent_wrong", f"accepted without an error, returned {got!r:.200}"


def _mistakes(ctx: _Ctx) -> list[tuple[str, Callable[[], tuple[str, str]]]]:
    import mvstore.store as ms

    d = ctx.docs
    base = ctx.built()
    root = base.root
    bad_nan = [x.copy() for x in d[30:33]]
    bad_nan[1][0, 2] = np.nan
    bad_inf = [x.copy() for x in d[30:33]]
    bad_inf[2][1, 0] = -np.inf

    def on_base(call: Callable[[Any], Any], cls: str, fix: str) -> Callable[[], tuple[str, str]]:
        return lambda: _mistake(ctx, base, lambda: call(base), cls, fix)

    def fresh(call: Callable[[Any], Any], cls: str, fix: str, **kw: Any) -> Callable[[], tuple[str, str]]:
        def run() -> tuple[str, str]:
            idx = ctx.new(**kw)
            return _mistake(ctx, idx, lambda: call(idx), cls, fix)

        return run

    def plain(call: Callable[[], Any], cls: str, fix: str) -> Callable[[], tuple[str, str]]:
        return lambda: _mistake(ctx, None, call, cls, fix)

    def lancedb_duplicate() -> tuple[str, str]:
        import lance
        import lancedb

        idx = ctx.built(10)
        row = lance.dataset(str(pathlib.Path(idx.root) / "docs.lance")).to_table(filter="id = 3")
        lancedb.connect(idx.root).open_table("docs").add(row)  # the same id again, past mvstore's checks
        return _mistake(
            ctx,
            None,
            lambda: ms.open(idx.root).search(d[3], k=5),
            "IndexCorruptedError",
            r"id 3 is stored more than once.*index\.delete\(\[3\]\)",
        )

    def struct_extra_field() -> tuple[str, str]:
        idx = ctx.new()
        idx.add([0], d[:1], metadata=[{"s": {"u": 1}}])
        return _mistake(
            ctx,
            idx,
            lambda: idx.add([1], d[1:2], metadata=[{"s": {"u": 1, "v": 2}}]),
            "InvalidMetadataError",
            r"'s\.v' is not in this index's column 's'.*drop the field",
        )

    def pinned_write() -> tuple[str, str]:
        return _mistake(
            ctx,
            base,
            lambda: ms.open(root, version=1).add([99], d[40:41]),
            "InvalidOperationError",
            r"checkout\(\)",
        )

    q = d[5]
    cases = [
        # vectors
        (
            "add_nan",
            on_base(
                lambda i: i.add([30, 31, 32], bad_nan),
                "InvalidVectorsError",
                r"document 1 .*NaN.*clean or drop",
            ),
        ),
        (
            "add_inf",
            on_base(
                lambda i: i.add([30, 31, 32], bad_inf),
                "InvalidVectorsError",
                r"document 2 .*Inf.*clean or drop",
            ),
        ),
        (
            "add_float64_beyond_float32",
            on_base(
                lambda i: i.add([30], [d[30].astype(np.float64) * 1e39]),
                "InvalidVectorsError",
                "beyond float32's range",
            ),
        ),
        (
            "add_empty_doc",
            on_base(
                lambda i: i.add([30, 31], [d[30], d[31][:0]]), "InvalidVectorsError", "drop empty documents"
            ),
        ),
        (
            "add_wrong_dim",
            on_base(
                lambda i: i.add([30], [d[30][:, :8]]),
                "DimensionMismatchError",
                "dim 8 but the index has dim 16",
            ),
        ),
        (
            "add_int_vectors",
            on_base(
                lambda i: i.add([30], [np.ones((3, DIM), np.int64)]),
                "InvalidDtypeError",
                r"astype\(np\.float32\)",
            ),
        ),
        (
            "add_str_vectors",
            on_base(lambda i: i.add([30], ["text"]), "InvalidDtypeError", "numpy array or torch tensor"),
        ),
        ("add_one_matrix", on_base(lambda i: i.add([30], d[30]), "InvalidVectorsError", r"\[matrix\]")),
        (
            "add_padded_3d",
            on_base(
                lambda i: i.add([30, 31], np.zeros((2, 3, DIM), np.float32)),
                "InvalidVectorsError",
                "from_padded",
            ),
        ),
        ("add_no_vectors", on_base(lambda i: i.add([30]), "InvalidDtypeError", r"add\(ids, vectors\)")),
        ("add_empty_batch", on_base(lambda i: i.add([], []), "InvalidVectorsError", "at least one")),
        (
            "add_batches_bad_item",
            on_base(lambda i: i.add_batches([[30]]), "InvalidDtypeError", r"\(ids, vectors\)"),
        ),
        (
            "fp16_overflow",
            fresh(lambda i: i.add([0, 1], [d[0], d[1] * 1e6]), "InvalidVectorsError", r"65504.*spec 'fp32'"),
        ),
        (
            "keep_source_overflow",
            fresh(
                lambda i: i.add(list(range(30)), [*(d[j] for j in range(29)), d[29] * 1e6]),
                "InvalidVectorsError",
                "without keep_source",
                spec="sq8",
                keep_source=True,
            ),
        ),
        # ids
        (
            "ids_count",
            on_base(lambda i: i.add([30], d[30:32]), "InvalidDtypeError", "exactly one id per document"),
        ),
        (
            "ids_repeat_in_batch",
            on_base(lambda i: i.add([30, 30], d[30:32]), "DuplicateIdError", "must be unique"),
        ),
        ("ids_existing", on_base(lambda i: i.add([3], d[30:31]), "DuplicateIdError", r"index\.upsert")),
        (
            "ids_float",
            on_base(lambda i: i.add([1.5], d[30:31]), "InvalidDtypeError", "all ints or all strings"),
        ),
        (
            "ids_mixed",
            fresh(lambda i: i.add([30, "a"], d[30:32]), "InvalidDtypeError", "all ints or all strings"),
        ),
        (
            "ids_mixed_numpy_str",
            fresh(
                lambda i: i.add(np.array([30, "a"], object), d[30:32]),
                "InvalidDtypeError",
                "all ints or all strings",
            ),
        ),
        (
            "ids_str_into_int_index",
            on_base(lambda i: i.add(["30"], d[30:31]), "InvalidDtypeError", r"int\(i\)"),
        ),
        (
            "ids_none",
            on_base(lambda i: i.add(None, d[30:31]), "InvalidDtypeError", "sequence of ints or strings"),
        ),
        ("ids_2**70", on_base(lambda i: i.add([2**70], d[30:31]), "InvalidIdError", r"string ids")),
        ("ids_-2**63-1", on_base(lambda i: i.add([-(2**63) - 1], d[30:31]), "InvalidIdError", r"string ids")),
        (
            "ids_uint64_max",
            on_base(
                lambda i: i.add(np.array([2**64 - 1], np.uint64), d[30:31]), "InvalidIdError", "string ids"
            ),
        ),
        (
            "ids_lone_surrogate",
            fresh(lambda i: i.add(["a\ud800"], d[:1]), "InvalidIdError", r"surrogate.*'replace'"),
        ),
        ("delete_unknown_id", on_base(lambda i: i.delete([555]), "UnknownIdError", "missing='ignore'")),
        (
            "delete_bad_missing",
            on_base(lambda i: i.delete([1], missing="skip"), "InvalidArgumentError", "'error' or 'ignore'"),
        ),
        # metadata
        (
            "meta_key_in_later_row",
            on_base(
                lambda i: i.add([30, 31], d[30:32], metadata=[{"lang": "en"}, {"lang": "en", "genre": "x"}]),
                "InvalidMetadataError",
                "'genre' is not in this index.*drop the column",
            ),
        ),
        (
            "meta_key_in_later_row_upsert",
            on_base(
                lambda i: i.upsert([1, 31], d[30:32], metadata=[{"year": 1}, {"genre": "x"}]),
                "InvalidMetadataError",
                "'genre' is not in this index",
            ),
        ),
        ("meta_struct_extra_field", struct_extra_field),
        (
            "meta_reserved_column",
            on_base(
                lambda i: i.add([30], d[30:31], metadata=[{"score": 0.5}]),
                "InvalidMetadataError",
                "reserved.*rename it",
            ),
        ),
        (
            "meta_rows_count",
            on_base(
                lambda i: i.add([30, 31], d[30:32], metadata=[{"lang": "en"}]),
                "InvalidMetadataError",
                "exactly one row per document",
            ),
        ),
        (
            "meta_wrong_type",
            on_base(
                lambda i: i.add([30], d[30:31], metadata={"year": ["nineteen"]}),
                "InvalidMetadataError",
                "convert it first",
            ),
        ),
        (
            "meta_not_dicts",
            on_base(
                lambda i: i.add([30], d[30:31], metadata=["en"]),
                "InvalidMetadataError",
                r"one dict per document",
            ),
        ),
        (
            "meta_scalar_column",
            on_base(
                lambda i: i.add([30], d[30:31], metadata={"lang": "en"}),
                "InvalidMetadataError",
                r"\{'lang': \['en'\]\}",
            ),
        ),
        (
            "meta_int_beyond_int64",
            on_base(
                lambda i: i.add([30], d[30:31], metadata=[{"year": 2**70}]),
                "InvalidMetadataError",
                "strings or floats",
            ),
        ),
        (
            "meta_lone_surrogate",
            on_base(
                lambda i: i.add([30], d[30:31], metadata=[{"lang": "x\udc80"}]),
                "InvalidMetadataError",
                r"surrogate.*'replace'",
            ),
        ),
        (
            "meta_dot_in_name",
            fresh(lambda i: i.add([0], d[:1], metadata={"a.b": [1]}), "InvalidMetadataError", "rename it"),
        ),
        (
            "meta_backtick_in_name",
            fresh(lambda i: i.add([0], d[:1], metadata={"a`b": [1]}), "InvalidMetadataError", "rename it"),
        ),
        (
            "meta_all_null_first_add",
            fresh(
                lambda i: i.add([0], d[:1], metadata=[{"note": None}]),
                "InvalidMetadataError",
                r"typed column",
            ),
        ),
        # create / open
        (
            "create_seed_negative",
            plain(lambda: ctx.new(seed=-1), "InvalidArgumentError", r"seed=-1 must be in \[0"),
        ),
        ("create_seed_float", plain(lambda: ctx.new(seed=0.5), "InvalidDtypeError", "seed must be an int")),
        (
            "create_dim_zero",
            plain(
                lambda: ms.create(ctx.workdir / "dim0", spec="fp16", dim=0),
                "InvalidArgumentError",
                "dim=0 must be a positive integer",
            ),
        ),
        (
            "create_dim_str",
            plain(
                lambda: ms.create(ctx.workdir / "dims", spec="fp16", dim="16"),
                "InvalidDtypeError",
                "dim must be an int",
            ),
        ),
        (
            "create_bad_spec",
            plain(
                lambda: ms.create(ctx.workdir / "spec", spec="sq9", dim=DIM), "SpecError", "expected|unknown"
            ),
        ),
        (
            "create_spec_too_wide",
            plain(lambda: ms.create(ctx.workdir / "pca", spec="pca32,sq8", dim=DIM), "SpecError", ""),
        ),
        (
            "create_drift_threshold",
            plain(lambda: ctx.new(drift_threshold=0.5), "InvalidArgumentError", "> 1.0"),
        ),
        (
            "create_existing",
            plain(lambda: ms.create(root, spec="fp16", dim=DIM), "IndexExistsError", "exist_ok=True"),
        ),
        (
            "create_unknown_scheme",
            plain(
                lambda: ms.create("ftp://host/ix", spec="fp16", dim=DIM),
                "InvalidArgumentError",
                "use a local path or one of s3://",
            ),
        ),
        (
            "create_bucket_only",
            plain(
                lambda: ms.create("s3://bucket", spec="fp16", dim=DIM),
                "InvalidArgumentError",
                "pass e.g. s3://bucket/",
            ),
        ),
        ("open_not_an_index", plain(lambda: ms.open(ctx.workdir), "IndexCorruptedError", r"create\(uri")),
        ("open_version_str", plain(lambda: ms.open(root, version="1"), "InvalidDtypeError", "use version=1")),
        (
            "open_version_bool",
            plain(lambda: ms.open(root, version=True), "InvalidDtypeError", r"index\.versions\(\)"),
        ),
        ("open_version_negative", plain(lambda: ms.open(root, version=-1), "InvalidArgumentError", ">= 0")),
        (
            "open_version_missing",
            plain(lambda: ms.open(root, version=99), "InvalidArgumentError", r"available versions: \[1\]"),
        ),
        (
            "checkout_version_str",
            plain(lambda: ms.open(root).checkout("1"), "InvalidDtypeError", "use version=1"),
        ),
        ("write_to_pinned_version", pinned_write),
        (
            "optimize_retrain_str",
            on_base(lambda i: i.optimize(retrain="yes"), "InvalidArgumentError", "True, False or 'auto'"),
        ),
        (
            "optimize_older_than_int",
            on_base(
                lambda i: i.optimize(cleanup=True, older_than=7), "InvalidDtypeError", r"timedelta\(days=7\)"
            ),
        ),
        (
            "train_after_add",
            on_base(lambda i: i.train(d[:5]), "InvalidOperationError", r"optimize\(retrain=True\)"),
        ),
        # search
        ("search_1d_query", on_base(lambda i: i.search(q[0]), "InvalidVectorsError", r"reshape\(1, -1\)")),
        ("search_nan_query", on_base(lambda i: i.search(q * np.nan), "InvalidVectorsError", "NaN")),
        ("search_wrong_dim", on_base(lambda i: i.search(q[:, :8]), "DimensionMismatchError", "same encoder")),
        (
            "search_int_query",
            on_base(lambda i: i.search(q.astype(int)), "InvalidDtypeError", r"astype\(np\.float32\)"),
        ),
        (
            "search_empty_query",
            on_base(lambda i: i.search(q[:0]), "InvalidVectorsError", "needs at least one"),
        ),
        ("search_k_0", on_base(lambda i: i.search(q, k=0), "SearchParamsError", "positive integer")),
        ("search_k_negative", on_base(lambda i: i.search(q, k=-3), "SearchParamsError", "positive integer")),
        ("search_k_float", on_base(lambda i: i.search(q, k=2.5), "InvalidDtypeError", "k=10")),
        ("search_k_str", on_base(lambda i: i.search(q, k="5"), "InvalidDtypeError", "k=10")),
        (
            "search_where_int",
            on_base(lambda i: i.search(q, where=5), "InvalidDtypeError", "SQL filter string"),
        ),
        ("search_where_empty", on_base(lambda i: i.search(q, where=""), "FilterError", "where=None")),
        (
            "search_where_unknown_column",
            on_base(lambda i: i.search(q, where="langg = 'en'"), "FilterError", "available columns"),
        ),
        (
            "search_where_double_quoted_value",
            on_base(lambda i: i.search(q, where='lang = "en"'), "FilterError", "single quotes"),
        ),
        (
            "search_where_syntax",
            on_base(lambda i: i.search(q, where="lang = "), "FilterError", "SQL predicate"),
        ),
        (
            "search_columns_str",
            on_base(lambda i: i.search(q, columns="lang"), "InvalidDtypeError", r"columns=\['lang'\]"),
        ),
        (
            "search_columns_unknown",
            on_base(lambda i: i.search(q, columns=["title"]), "FilterError", "available columns"),
        ),
        (
            "search_params_str",
            on_base(
                lambda i: i.search(q, params="exhaustive"),
                "InvalidDtypeError",
                r"SearchParams\(candidates='exhaustive'\)",
            ),
        ),
        (
            "search_params_unknown_field",
            on_base(lambda i: i.search(q, params={"nprob": 4}), "SearchParamsError", "fields are"),
        ),
        (
            "search_params_bad_value",
            on_base(
                lambda i: i.search(q, params={"nprobe": 0}), "SearchParamsError", "must be a positive integer"
            ),
        ),
        ("lancedb_add_repeats_an_id", lancedb_duplicate),
    ]
    return cases


# --------------------------------------------------------------------------------------- valid inputs
def _same(got: Any, want: Any, what: str) -> tuple[str, str]:
    if got == want:
        return "ok", what
    return "silent_wrong", f"{what}: got {got!r:.600} want {want!r:.600}"


def _ids(t: Any) -> list[Any]:
    return t["id"].to_pylist()


def _exhaustive() -> Any:
    from mvstore.search.params import SearchParams

    return SearchParams(candidates="exhaustive")


def _union_add(ctx: _Ctx) -> tuple[str, str]:
    d = ctx.docs
    idx = ctx.new()
    rows = [{"lang": "en"}, {"lang": "fr", "year": 2001}, {"year": 2002, "lang": None}, {"note": "n"}]
    idx.add([0, 1, 2, 3], d[:4], metadata=rows)
    want = {i: {k: r.get(k) for k in ("lang", "year", "note")} for i, r in enumerate(rows)}
    return _same(_stored(idx, ["lang", "year", "note"]), want, "rows with different keys, first add")


def _union_upsert(ctx: _Ctx) -> tuple[str, str]:
    d = ctx.docs
    idx = ctx.built(6)
    idx.upsert([1, 50], d[40:42], metadata=[{"lang": "xx"}, {"lang": "yy", "year": 1}])
    want = {i: {"lang": m["lang"], "year": m["year"]} for i, m in zip(range(6), _meta(range(6)))}
    want[1] = {"lang": "xx", "year": None}  # the batch gives "year": a row without it is null
    want[50] = {"lang": "yy", "year": 1}
    return _same(_stored(idx, ["lang", "year"]), want, "upsert rows with different keys")


def _null_of_known_type(ctx: _Ctx) -> tuple[str, str]:
    d = ctx.docs
    idx = ctx.built(3)
    idx.add([10, 11], d[10:12], metadata=[{"year": None}, {"year": None, "lang": "en"}])
    got = {k: v for k, v in _stored(idx, ["lang", "year"]).items() if k >= 10}
    return _same(got, {10: {"lang": None, "year": None}, 11: {"lang": "en", "year": None}}, "null year")


def _upsert_keeps_metadata(ctx: _Ctx) -> tuple[str, str]:
    d = ctx.docs
    exact = _exhaustive()
    idx = ctx.built(6)
    idx.upsert([2], d[45:46])
    idx.upsert([3], d[46:47], metadata={"year": [1]})
    got = _stored(idx, ["lang", "year", "My Col"])
    m = _meta(range(6))
    want = {i: dict(m[i]) for i in range(6)}
    want[3]["year"] = 1
    if got != want:
        return _same(got, want, "upsert without (all) metadata")
    return _same(_ids(idx.search(d[45], k=1, params=exact)), [2], "upserted vectors are searched")


def _quoted_where(ctx: _Ctx) -> tuple[str, str]:
    d = ctx.docs
    exact = _exhaustive()
    idx = ctx.built(20)
    want = {i for i in range(20) if i % 2 == 1}
    for where in ("\"My Col\" = 'v1'", "`My Col` = 'v1'", '"My Col" = \'v1\' AND "year" >= 2000'):
        got = set(_ids(idx.search(d[0], k=20, where=where, params=exact)))
        if got != want:
            return _same(sorted(got), sorted(want), f"where={where}")
    return "ok", "double-quoted and backtick-quoted column names filter the same rows"


def _quotes_inside_literals(ctx: _Ctx) -> tuple[str, str]:
    d = ctx.docs
    exact = _exhaustive()
    idx = ctx.new()
    texts = ['say "hi"', "it's", '"My Col"', "`x`"]
    idx.add([0, 1, 2, 3], d[:4], metadata={"text": texts})
    for i, s in enumerate(texts):
        where = "text = '" + s.replace("'", "''") + "'"
        got = _ids(idx.search(d[0], k=4, where=where, params=exact))
        if got != [i]:
            return _same(got, [i], f"where={where}")
    return "ok", "string literals holding quotes and backticks are left as they are"


def _int64_bounds(ctx: _Ctx) -> tuple[str, str]:
    d = ctx.docs
    exact = _exhaustive()
    idx = ctx.new()
    lo, hi = -(2**63), 2**63 - 1
    idx.add([lo, hi, 0], d[:3], metadata={"n": [lo, hi, 0]})
    if _stored(idx, ["n"]) != {lo: {"n": lo}, hi: {"n": hi}, 0: {"n": 0}}:
        return _same(_stored(idx, ["n"]), "ids and values at the int64 bounds", "stored")
    if _ids(idx.search(d[0], k=1, params=exact)) != [lo]:
        return _same(_ids(idx.search(d[0], k=1, params=exact)), [lo], "search")
    idx.delete([lo, hi])
    return _same(sorted(_stored(idx, []).keys()), [0], "delete of the int64 bounds")


def _text_ids(ctx: _Ctx) -> tuple[str, str]:
    d = ctx.docs
    exact = _exhaustive()
    idx = ctx.new()
    ids = ["b's", 'q"d', "naïve", "😀", "a b", "x\u0301", "IN (1)"]
    idx.add(ids, d[: len(ids)], metadata={"t": [f"é{s}" for s in ids]})
    found = [_ids(idx.search(d[i], k=1, params=exact))[0] for i in range(len(ids))]
    if found != ids:
        return _same(found, ids, "search returns the exact string ids")
    idx.delete(["b's", "IN (1)"])
    want = {s: {"t": f"é{s}"} for s in ids if s not in ("b's", "IN (1)")}
    return _same(_stored(idx, ["t"]), want, "string ids with quotes and unicode, after a delete")


def _torch_query(ctx: _Ctx) -> tuple[str, str]:
    import torch

    d = ctx.docs
    idx = ctx.built(20)
    want = idx.search(d[7], k=3).to_pylist()
    return _same(idx.search(torch.from_numpy(d[7]), k=3).to_pylist(), want, "one query as a 2-D tensor")


def _other_float_dtypes(ctx: _Ctx) -> tuple[str, str]:
    d = ctx.docs
    exact = _exhaustive()
    a, b = ctx.new(spec="fp32"), ctx.new(spec="fp32")
    a.add(list(range(10)), d[:10])
    b.add(list(range(10)), [x.astype(np.float64) for x in d[:10]])
    want = a.search(d[3], k=5, params=exact).to_pylist()
    return _same(
        b.search(d[3].astype(np.float64), k=5, params=exact).to_pylist(), want, "float64 like float32"
    )


def _readd_after_delete(ctx: _Ctx) -> tuple[str, str]:
    d = ctx.docs
    exact = _exhaustive()
    idx = ctx.built(10)
    idx.delete([4])
    idx.add([4], d[44:45], metadata=[{"lang": "zz"}])
    t = idx.search(d[44], k=10, params=exact, columns=["lang"]).to_pylist()
    return _same(
        [(r["id"], r["lang"]) for r in t if r["id"] == 4], [(4, "zz")], "re-added id once, new metadata"
    )


def _valid(ctx: _Ctx) -> list[tuple[str, Callable[[], tuple[str, str]]]]:
    cases = [
        ("meta_union_of_keys_add", partial(_union_add, ctx)),
        ("meta_union_of_keys_upsert", partial(_union_upsert, ctx)),
        ("meta_null_of_known_type", partial(_null_of_known_type, ctx)),
        ("upsert_keeps_metadata_not_given", partial(_upsert_keeps_metadata, ctx)),
        ("where_double_quoted_column", partial(_quoted_where, ctx)),
        ("where_quotes_inside_literals", partial(_quotes_inside_literals, ctx)),
        ("ids_and_metadata_at_int64_bounds", partial(_int64_bounds, ctx)),
        ("string_ids_quotes_unicode", partial(_text_ids, ctx)),
        ("float64_documents", partial(_other_float_dtypes, ctx)),
        ("readd_after_delete", partial(_readd_after_delete, ctx)),
    ]
    if importlib.util.find_spec("torch") is not None:  # torch is an optional extra
        cases.append(("torch_2d_query", partial(_torch_query, ctx)))
    return cases


def _random_metadata(ctx: _Ctx, rng: np.random.Generator, trial: int) -> tuple[str, str]:
    """Rows with random subsets of typed keys, added then upserted in batches; compared with a dict oracle."""
    keys = {
        "lang": lambda i: ("en", "fr", "ü")[i % 3],
        "year": lambda i: 1990 + i,
        "rating": lambda i: i / 4,
        "flag": lambda i: bool(i % 2),
        "tags": lambda i: [f"t{i}", "x"],
        "src": lambda i: {"page": i},
    }
    idx = ctx.new()
    oracle: dict[int, dict[str, Any]] = {}
    first = [{k: f(0) for k, f in keys.items()}] + [  # row 0 holds every key so each column has a type
        {k: f(i) for k, f in keys.items() if rng.random() < 0.5} for i in range(1, 8)
    ]
    idx.add(list(range(8)), ctx.docs[:8], metadata=first)
    for i, r in enumerate(first):
        oracle[i] = {k: r.get(k) for k in keys}
    for step in range(3):
        ids = sorted(rng.choice(16, 4, replace=False).tolist())
        rows = [{k: f(100 * step + i) for k, f in keys.items() if rng.random() < 0.5} for i in ids]
        given = {k for r in rows for k in r}
        idx.upsert(ids, [ctx.docs[20 + i] for i in ids], metadata=rows if given else None)
        for i, r in zip(ids, rows):
            old = oracle.get(i, {k: None for k in keys})
            oracle[i] = {k: (r.get(k) if k in given else old[k]) for k in keys}
    return _same(_stored(idx, list(keys)), oracle, f"random metadata trial {trial}")


def run(workdir: pathlib.Path, *, quick: bool, seed: int = 0) -> list[dict]:
    workdir = pathlib.Path(workdir) / "inputs"
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    ctx = _Ctx(workdir, seed)
    cases = _mistakes(ctx) + _valid(ctx)
    rng = np.random.default_rng(seed)
    cases += [
        (f"random_metadata_{t}", lambda t=t: _random_metadata(ctx, rng, t)) for t in range(2 if quick else 25)
    ]
    out = []
    for name, case in cases:
        try:
            outcome, detail = case()
        except Exception as e:  # noqa: BLE001 - a valid input that raised, or a case that broke
            outcome, detail = "raw_error", f"{type(e).__name__}: {e} | {traceback.format_exc(limit=-3)}"
        out.append({"group": GROUP, "case": name, "outcome": outcome, "detail": str(detail)[:2000]})
    shutil.rmtree(workdir, ignore_errors=True)
    return out
