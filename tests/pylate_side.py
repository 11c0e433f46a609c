"""The PyLate side of "PyLate writes, mvstore reads": run by ``.venv-pylate/bin/python`` (the Makefile's PyLate
1.2 venv, see tests/test_import_plaid.py), never imported by the test suite, and it imports no mvstore.

``python tests/pylate_side.py stanford IN.npz OUT_DIR`` reads the documents (``docs_0`` .. ``docs_{n-1}``,
float32 ``(tokens, dim)``), the ids, the ids to remove and one query from IN.npz; builds PyLate 1.2's Stanford
ColBERT ``indexes.PLAID`` of them at ``OUT_DIR/pl/ix`` (CPU), removes those ids, and writes PyLate's own view
to ``OUT_DIR/pylate.npz``: the kept PLAID document numbers, their embeddings as PyLate's codec decompresses them
(``lookup_pids``) with their lengths, and the id PyLate's search ranks first for the query.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np

# PyLate 1.2's Stanford code JIT-compiles four torch C++ extensions at first use, one after another (each
# about 40 s of one core here; torch caches them, in ~/.cache/torch_extensions by default). Its own loaders,
# split over two processes, build them side by side first; its later loads find them built.
EXTENSION_LOADERS = [
    "from pylate.indexes.stanford_nlp.search.index_storage import IndexScorer\n"
    "IndexScorer.try_load_torch_extensions(use_gpu=False)",  # filter_pids_cpp, decompress_residuals_cpp
    "from pylate.indexes.stanford_nlp.search.strided_tensor import StridedTensor\n"
    "from pylate.indexes.stanford_nlp.modeling.colbert import try_load_torch_extensions\n"
    "StridedTensor.try_load_torch_extensions(use_gpu=False)\n"  # segmented_lookup_cpp
    "try_load_torch_extensions(use_gpu=False)",  # segmented_maxsim_cpp
]


def build_extensions() -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for code in EXTENSION_LOADERS
    ]
    for code, proc in zip(EXTENSION_LOADERS, procs):
        out = proc.communicate()[0]
        if proc.returncode != 0:
            sys.exit(f"building PyLate's C++ extensions ({code!r}) failed:\n{out}")


def stanford(inp: Path, out: Path) -> None:
    import pylate
    import torch
    from pylate import indexes

    if "embedding_size" not in indexes.PLAID.__init__.__code__.co_varnames or hasattr(
        indexes.PLAID, "use_fast"
    ):
        sys.exit(f"PyLate {pylate.__version__}'s indexes.PLAID is not the Stanford ColBERT one (want 1.2)")
    build_extensions()
    data = np.load(inp)
    docs = [data[f"docs_{i}"] for i in range(len(data["ids"]))]
    ids = [str(i) for i in data["ids"]]
    ix = indexes.PLAID(
        index_folder=str(out / "pl"), index_name="ix", override=True, embedding_size=docs[0].shape[1], nbits=2
    )
    ix.add_documents(documents_ids=ids, documents_embeddings=docs)
    removed = [str(i) for i in data["remove"]]
    ix.remove_documents(removed)
    kept = np.array([pid for pid, doc_id in enumerate(ids) if doc_id not in removed], dtype=np.int64)
    values, lengths = ix.searcher.ranker.embeddings_strided.lookup_pids(
        torch.from_numpy(kept), out_device="cpu"
    )
    top = ix(data["query"][None], k=1)[0][0]["id"]
    np.savez(
        out / "pylate.npz",
        kept=kept,
        values=values.float().numpy(),
        lengths=lengths.numpy(),
        top=np.array(top),
        version=np.array(pylate.__version__),
    )


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "stanford":
        sys.exit(__doc__)
    stanford(Path(sys.argv[2]), Path(sys.argv[3]))
