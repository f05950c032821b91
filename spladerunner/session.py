"""The onnxruntime session: create it on the requested providers, check the graph, run a batch.

Every graph layout (`spladerunner.manifest`) comes out of `GraphSession.run` as per-row candidates
or dense pooled weights; logits graphs are pooled here in place, so no second [batch, length, vocab]
array is ever made.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .errors import GraphError, GraphLayoutError, ProviderError
from .manifest import (
    POOLED_OUTPUT,
    TOPK_EMBEDDINGS_OUTPUT,
    TOPK_IDS_OUTPUT,
    TOPK_WEIGHTS_OUTPUT,
    GraphEntry,
)
from .tokenization import Batch

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# onnxruntime's load-time fusions whose CPU kernels are scalar loops, slower than the ops they replace
# (Add + LayerNormalization, Add + Gelu): int8 documents are faster without them (benchmarks/RESULTS.md).
SLOW_CPU_FUSIONS = ("SkipLayerNormFusion", "BiasGeluFusion")
EXPECTED_OUTPUTS = {
    "pooled": (POOLED_OUTPUT,),
    "topk": (TOPK_IDS_OUTPUT, TOPK_WEIGHTS_OUTPUT),
    "sparsembed": (TOPK_IDS_OUTPUT, TOPK_WEIGHTS_OUTPUT, TOPK_EMBEDDINGS_OUTPUT),
}


def default_threads() -> int:
    """CPUs this process may run on (a container's or taskset's limit, not the host's core count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def normalise_providers(providers: Sequence[str | tuple[str, dict]] | None) -> list[str | tuple[str, dict]]:
    """Accept 'cpu'/'cuda' shorthands or onnxruntime provider names/tuples; CPU by default."""
    if not providers:
        return [CPU]
    shorthand = {"cpu": CPU, "cuda": CUDA}
    resolved = [shorthand.get(p.lower(), p) if isinstance(p, str) else p for p in providers]
    # onnxruntime's CUDA provider uses TF32 matmuls by default (errors ~1e-2 on SPLADE weights): an fp32
    # graph should compute in fp32; the fp16 graph is the fast path. Explicit provider options win.
    resolved = [(CUDA, {"use_tf32": "0"}) if p == CUDA else p for p in resolved]
    names = [p if isinstance(p, str) else p[0] for p in resolved]
    # CPU stays as the fallback for the few ops a GPU provider does not implement.
    if CPU not in names:
        resolved.append(CPU)
    return resolved


class GraphSession:
    """One ONNX graph on one onnxruntime session, checked against its manifest entry."""

    def __init__(self, path: Path, entry: GraphEntry, *, vocab_size: int, pooling: str,
                 providers: Sequence[str | tuple[str, dict]] | None = None, threads: int | None = None):
        import onnxruntime as ort

        self.path = path
        self.entry = entry
        self.pooling = pooling
        requested = normalise_providers(providers)
        requested_names = [p if isinstance(p, str) else p[0] for p in requested]
        available = ort.get_available_providers()
        missing = [p for p in requested_names if p not in available]
        if missing:
            raise ProviderError(
                f"execution provider(s) {missing} are not in this onnxruntime build (available: {available}); "
                "for CUDA install spladerunner[gpu] after uninstalling onnxruntime (see README)"
            )
        if CUDA in requested_names and hasattr(ort, "preload_dlls"):
            # Finds CUDA/cuDNN from pip's nvidia-* wheels or torch, so no LD_LIBRARY_PATH is needed.
            ort.preload_dlls()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=options, providers=requested,
                disabled_optimizers=list(SLOW_CPU_FUSIONS) if requested_names == [CPU] else None)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/NoSuchFile types
            raise GraphError(f"{path}: onnxruntime cannot load this graph ({exc})") from None
        active = self.session.get_providers()
        # onnxruntime silently falls back to CPU when CUDA libraries are missing: refuse that.
        inactive = [p for p in requested_names if p not in active]
        if inactive:
            raise ProviderError(
                f"execution provider(s) {inactive} were requested but onnxruntime runs {path} on {active} "
                "(CUDA/cuDNN libraries missing or not matching this onnxruntime-gpu build?)"
            )
        self.providers = active
        self._worker: ThreadPoolExecutor | None = None
        self._worker_lock = threading.Lock()
        self.input_names = self._check_inputs()
        self._check_outputs(vocab_size)

    def _check_inputs(self) -> list[str]:
        names = [i.name for i in self.session.get_inputs()]
        unknown = [n for n in names if n not in KNOWN_INPUTS]
        if unknown or "input_ids" not in names or "attention_mask" not in names:
            raise GraphLayoutError(f"{self.path}: graph inputs {names}; expected input_ids, attention_mask "
                             "and optionally token_type_ids")
        return names

    def _check_outputs(self, vocab_size: int) -> None:
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        layout = self.entry.output
        if layout == "logits":
            shapes = list(outputs.values())
            if len(shapes[0]) != 3:
                raise GraphLayoutError(f"{self.path}: a logits graph must output [batch, length, vocab], "
                                 f"got {list(outputs.items())[0]}")
            vocab_dim = shapes[0][2]
        else:
            expected = EXPECTED_OUTPUTS[layout]
            if any(name not in outputs for name in expected):
                raise GraphLayoutError(f"{self.path}: manifest says output layout {layout!r} ({expected}) "
                                 f"but the graph outputs {sorted(outputs)}")
            vocab_dim = outputs[POOLED_OUTPUT][1] if layout == "pooled" else None
            top_dim = outputs[TOPK_IDS_OUTPUT][1] if layout != "pooled" else None
            if isinstance(top_dim, int) and self.entry.top_k is not None and top_dim != self.entry.top_k:
                raise GraphLayoutError(f"{self.path}: manifest says top_k={self.entry.top_k}, graph keeps {top_dim}")
        if isinstance(vocab_dim, int) and vocab_dim != vocab_size:
            raise GraphLayoutError(f"{self.path}: graph outputs a vocabulary of {vocab_dim} entries, but the "
                             f"manifest/tokenizer has {vocab_size}")

    def run_all(self, batches: Iterable[Batch], *, overlap: bool) -> Iterator[tuple[Batch, dict[str, np.ndarray]]]:
        """(batch, outputs) in order. With `overlap`, the next batch runs while the caller handles this one.

        On a GPU the device would otherwise idle while the CPU pads and sparsifies (onnxruntime releases
        the GIL in `run`); on CPU both would fight for the same cores. One long-lived worker thread runs
        the batches: onnxruntime's CUDA provider keeps cuBLAS/cuDNN handles per thread, so a fresh thread
        per call would pay for new ones every time. Callers on several threads share that worker (each
        call waits on its own futures only), and `InferenceSession.run` is thread-safe.
        """
        pending: tuple[Batch, Future] | None = None
        for batch in batches:
            if not overlap:
                yield batch, self.run(batch)
                continue
            with self._worker_lock:  # one Expander shared by threads: create the worker once
                if self._worker is None:
                    self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spladerunner-session")
            future = self._worker.submit(self.run, batch)
            if pending is not None:
                yield pending[0], pending[1].result()
            pending = (batch, future)
        if pending is not None:
            yield pending[0], pending[1].result()

    def run(self, batch: Batch) -> dict[str, np.ndarray]:
        """Run one batch. Returns `sparse_weights` [B, V] (pooled, logits) or the top-k outputs."""
        feed = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        if "token_type_ids" in self.input_names:
            feed["token_type_ids"] = batch.token_type_ids
        outputs = self.session.run(None, feed)
        names = [o.name for o in self.session.get_outputs()]
        if self.entry.output == "logits":
            return {POOLED_OUTPUT: pool_logits(outputs[0], batch.attention_mask, self.pooling)}
        return dict(zip(names, outputs))


def pool_logits(logits: np.ndarray, attention_mask: np.ndarray, pooling: str) -> np.ndarray:
    """SPLADE pooling of MLM logits [B, L, V] -> [B, V], in place on the session's output buffer."""
    padding = attention_mask == 0
    if pooling == "max":
        # log1p(relu(.)) is monotone: take the masked max first, activate [B, V] only.
        logits[padding] = -np.inf
        pooled = logits.max(axis=1)
        np.maximum(pooled, 0.0, out=pooled)
        return np.log1p(pooled, out=pooled)
    np.maximum(logits, 0.0, out=logits)
    np.log1p(logits, out=logits)
    logits[padding] = 0.0
    return logits.sum(axis=1)
