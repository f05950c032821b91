"""Run settings: the full measurement run and the smoke run share every code path, only the sizes differ."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    """How much of everything to measure.

    `rounds`: each measured configuration runs this many times, each in a fresh process, in
    interleaved order (so a burst of load from elsewhere hits every system alike); medians reported.
    `grouped`: run all tasks of one configuration in one process, and `parallel` processes at once
    (smoke only: its figures are not measurements).
    Contention: before each process wait up to `quiet_wait_s` for other processes to use less than
    `quiet_below` of the CPUs; rerun a process (up to `retries` times) when they took more than
    `retry_above` while it ran, keeping the least disturbed attempt.
    Levers: `lever_options` names entries of `plan.SESSION_OPTIONS`; `lever_graphs` is (precision, graph)
    with graph "export" (the default export: one fused Attention op per layer) or "unfused"
    (`spladerunner-export --unfused-attention`).
    """

    model_size: str
    max_length: int
    batch_size: int
    documents: int
    queries: int
    warmup: int
    rounds: int
    memory_shapes: tuple[tuple[int, int], ...]
    sweep_lengths: tuple[int, ...]
    sweep_batch_sizes: tuple[int, ...]
    sweep_min_seconds: float
    agreement_texts: int
    cold_runs: int
    import_runs: int
    lever_documents: int
    lever_max_tokens: tuple[int, ...]
    lever_threads: tuple[int, ...]
    lever_options: tuple[str, ...]
    lever_graphs: tuple[tuple[str, str], ...]
    grouped: bool
    parallel: int
    quiet_below: float
    quiet_wait_s: float
    retry_above: float
    retries: int
    smoke: bool


FULL = Config(
    model_size="base", max_length=256, batch_size=32, documents=96, queries=100, warmup=16, rounds=3,
    memory_shapes=((32, 128), (32, 256)), sweep_lengths=(32, 64, 128, 256), sweep_batch_sizes=(1, 8, 32),
    sweep_min_seconds=1.0, agreement_texts=64, cold_runs=3, import_runs=5, lever_documents=96,
    lever_max_tokens=(512, 1024, 2048, 4096, 8192), lever_threads=(1, 2),
    lever_options=("defaults", "cpu arena off", "memory pattern off", "arena + pattern off", "no thread spinning"),
    lever_graphs=(("int8", "export"), ("int8", "unfused"), ("fp32", "export"), ("fp32", "unfused")),
    grouped=False, parallel=1, quiet_below=0.15, quiet_wait_s=60, retry_above=0.25, retries=1, smoke=False,
)

SMOKE = Config(
    model_size="tiny", max_length=256, batch_size=4, documents=8, queries=4, warmup=2, rounds=1,
    memory_shapes=((4, 32), (4, 64)), sweep_lengths=(16, 32), sweep_batch_sizes=(1, 4),
    sweep_min_seconds=0.0, agreement_texts=4, cold_runs=1, import_runs=1, lever_documents=4,
    lever_max_tokens=(256, 1024), lever_threads=(1,), lever_options=("defaults", "cpu arena off"),
    lever_graphs=(("int8", "export"), ("int8", "unfused")),
    grouped=True, parallel=2, quiet_below=1.0, quiet_wait_s=0, retry_above=1.0, retries=0, smoke=True,
)
