"""Encoder options shared by `index`, `search` and `eval`: a SPLADE model, BM25 or inference-free IDF queries."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..loading import DEFAULT_MODEL
from ..manifest import PRECISIONS


def add_encoder_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help=f"model folder or hub id (default: an index's own model, else {DEFAULT_MODEL})")
    parser.add_argument("--bm25", action="store_true", help="BM25 over WordPiece tokens instead of a model")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer.json for --bm25 / --idf-queries (default: an index's own, else required "
                             "with --bm25)")
    parser.add_argument("--idf-queries", default=None, metavar="IDF_JSON",
                        help="encode queries with this IDF table only (inference-free, doc-only models) "
                             "(default: an index's own, else queries use the document encoder)")
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="model precision (default: an index's own, else the fastest that passed the "
                             "export gate: int8, else fp32, on CPU)")
    parser.add_argument("--threads", type=int, default=None,
                        help="onnxruntime intra-op threads (default: the CPUs this process may use)")


def add_window_arguments(parser: argparse.ArgumentParser) -> None:
    """--windows / --window-stride / --window-norm for the commands that expand documents (`expand`, `index`,
    `eval`)."""
    parser.add_argument("--windows", action="store_true",
                        help="read documents longer than the max length as overlapping token windows, their vector "
                             "the max over the windows, length-normalised (default: cut them at the max length; "
                             "queries always are)")
    parser.add_argument("--window-stride", type=int, default=None, metavar="N",
                        help="with --windows: tokens between window starts (default: half a window's text tokens)")
    parser.add_argument("--window-norm", type=float, default=None, metavar="B",
                        help="with --windows: a windowed document's max is divided by (its tokens / a window's "
                             "tokens) ** B (default: the Expander's window_norm; 0: the plain max)")


def window_options(args: argparse.Namespace) -> dict[str, Any]:
    """The Expander's long-document keywords from --windows / --window-stride / --window-norm (absent on
    `search`); none without --windows, so settings recorded elsewhere (ray shards) stay those of a plain run."""
    windows = getattr(args, "windows", False)
    given = {"stride": getattr(args, "window_stride", None), "norm": getattr(args, "window_norm", None)}
    for name, value in given.items():
        if value is not None and not windows:
            raise InputError(f"--window-{name} needs --windows")
    return {"long_documents": "windows", "window_stride": given["stride"],
            "window_norm": given["norm"]} if windows else {}


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress line on stderr (default: when stderr is a terminal)")


def encoders_from_args(args: argparse.Namespace, saved: Mapping[str, Any] | None = None) -> tuple[Any, Any]:
    """(document encoder, query encoder) the arguments choose; `saved` is an index's metadata to fall back on.

    A BM25 document encoder comes back unfitted: the caller fits it on its corpus.
    """
    saved = saved or {}
    if args.bm25 or (args.model is None and saved.get("encoder") == "bm25"):
        tokenizer = args.tokenizer or saved.get("tokenizer")
        if tokenizer is None:
            raise InputError("--bm25 needs --tokenizer PATH (a tokenizer.json)")
        from ..bm25 import BM25Encoder

        if window_options(args):
            raise InputError("--windows needs a model: BM25 counts every token of a document, it cuts nothing")
        documents = BM25Encoder(tokenizer)
    else:
        from ..expander import Expander

        documents = Expander(args.model or saved.get("model") or DEFAULT_MODEL,
                             precision=args.precision or saved.get("precision"), threads=args.threads,
                             **window_options(args))
    idf = args.idf_queries or saved.get("idf_queries")
    if idf is None:
        return documents, documents
    from ..idf_queries import IdfQueryEncoder

    return documents, IdfQueryEncoder(documents.tokenizer, idf)


def encoder_metadata(args: argparse.Namespace, documents: Any) -> dict[str, Any]:
    """What `search` needs to rebuild the query encoder, saved in the index (local paths made absolute)."""
    from ..bm25 import BM25Encoder

    if isinstance(documents, BM25Encoder):
        meta: dict[str, Any] = {"encoder": "bm25", "tokenizer": str(Path(args.tokenizer).resolve()),
                                **documents.parameters()}
    else:
        source = documents.source
        meta = {"encoder": "model", "model": str(source.folder.resolve()) if source.is_local else source.name,
                "precision": documents.precision}
        if documents.long_documents == "windows":
            meta.update(long_documents="windows", window_stride=documents.window_stride,
                        window_norm=documents.window_norm)
    if args.idf_queries:
        meta["idf_queries"] = str(Path(args.idf_queries).resolve())
    return meta


def index_corpus(args: argparse.Namespace, corpus: Sequence[Mapping[str, Any]], *, key: str,
                 on: Sequence[str]) -> tuple[Any, Any, float]:
    """Index a corpus with the encoders the arguments choose -> (SparseIndex, query encoder, seconds).

    BM25 is fitted on the corpus and weighs it in the same tokenisation. The seconds are the time to
    index: encoding and merging the postings, not loading the model.
    """
    from ..bm25 import BM25Encoder
    from ..documents import document_texts
    from ..retrieval import SparseIndex

    documents, queries = encoders_from_args(args)
    started = time.perf_counter()
    if isinstance(documents, BM25Encoder):
        ids, texts = document_texts(corpus, key=key, on=on)
        vectors = documents.fit_expand(texts)  # fitted first: its parameters go into the metadata
    index = SparseIndex(documents, precision=args.weights, metadata=encoder_metadata(args, documents))
    if isinstance(documents, BM25Encoder):
        index.add_vectors(vectors, ids)
    else:
        show = args.progress if args.progress is not None else sys.stderr.isatty()
        index.add(corpus, key=key, on=on, batch_size=args.batch_size, progress=show)
    index.compact()  # merged here, so that searching or saving does not pay for it
    return index, queries, time.perf_counter() - started
