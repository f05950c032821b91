"""SparseIndex and SparsEmbedIndex under threads, crashes, corrupt folders and bad arguments.

Everything runs for real: threads on one shared index, a saving process killed with SIGKILL, a file
size limit that makes writes fail like a full disk, and hand-edited index folders.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from spladerunner.errors import IndexFormatError, InputError
from spladerunner.index_folder import MANIFEST_FILE, header_checksum
from spladerunner.postings import BLOCK
from spladerunner.retrieval import SparseIndex
from spladerunner.sparse import SparseBatch, SparseVector
from spladerunner.sparsembed import SparsEmbedBatch
from spladerunner.sparsembed_index import SparsEmbedIndex

VOCAB, DIM = 60, 4
REPO = Path(__file__).resolve().parents[1]


def sparse_batch(rng: np.random.Generator, n: int, terms: tuple[int, int] = (0, VOCAB),
                 max_terms: int = 8) -> SparseBatch:
    """n vectors over term ids in [terms[0], terms[1]) with continuous weights (no score ties)."""
    vectors = []
    for _ in range(n):
        ids = rng.choice(np.arange(*terms), size=rng.integers(1, max_terms + 1), replace=False)
        vectors.append(SparseVector(ids, rng.uniform(0.1, 3.0, len(ids)).astype(np.float32)))
    return SparseBatch.from_vectors(vectors, VOCAB)


def sparsembed_batch(rng: np.random.Generator, n: int, terms: tuple[int, int] = (0, VOCAB)) -> SparsEmbedBatch:
    sparse = sparse_batch(rng, n, terms)
    return SparsEmbedBatch(sparse, rng.uniform(0.1, 1.0, (sparse.indptr[-1], DIM)).astype(np.float32))


KINDS = {"sparse": (SparseIndex, sparse_batch), "sparsembed": (SparsEmbedIndex, sparsembed_batch)}


def rows_of(batch) -> list[dict[int, object]]:
    """Each vector as {term: weight} (SPLADE) or {term: embedding} (SparsEmbed)."""
    if isinstance(batch, SparsEmbedBatch):
        return [dict(zip(v.terms.ids.tolist(), v.embeddings.astype(np.float64))) for v in batch]
    return [dict(zip(v.ids.tolist(), v.weights.astype(np.float64).tolist())) for v in batch]


def brute_force(queries, documents: dict[str, dict[int, object]], k: int) -> list[list[str]]:
    """Top-k ids per query over `documents` (insertion order = tie order), scores > 0 only."""
    out = []
    for query in rows_of(queries):
        scores = [(float(sum(np.dot(w, doc[t]) for t, w in query.items() if t in doc)), position, doc_id)
                  for position, (doc_id, doc) in enumerate(documents.items())]
        ranked = sorted((s for s in scores if s[0] > 0), key=lambda s: (-s[0], s[1]))[:k]
        out.append([doc_id for _, _, doc_id in ranked])
    return out


# -- threads ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_concurrent_searches_right_after_adding_agree_with_serial(kind: str) -> None:
    """8 threads search an index whose added documents are still pending: each gets the serial answer."""
    index_type, make = KINDS[kind]
    rng = np.random.default_rng(1)
    queries = make(rng, 20)
    for _ in range(5):
        index = index_type()
        batches = [make(rng, 40) for _ in range(6)]
        for n, batch in enumerate(batches):
            index.add_vectors(batch, [f"b{n}-{i}" for i in range(len(batch))])
        expected = brute_force(queries, {f"b{n}-{i}": row for n, b in enumerate(batches)
                                         for i, row in enumerate(rows_of(b))}, 10)
        results: list[object] = [None] * 8
        barrier = threading.Barrier(8)

        def search(slot: int, index=index, barrier=barrier, results=results) -> None:
            barrier.wait()
            results[slot] = index.search(queries, k=10).ids

        threads = [threading.Thread(target=search, args=(slot,)) for slot in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert all(r == expected for r in results)


@pytest.mark.parametrize("kind", KINDS)
def test_searches_while_other_threads_add_replace_and_delete(kind: str) -> None:
    """Writers add, replace and delete documents that cannot match the queries (terms 30..59) and replace
    matching ones by identical copies: every concurrent search must see exactly the baseline ranking,
    and afterwards the index must equal a brute force over what the writers left."""
    index_type, make = KINDS[kind]
    rng = np.random.default_rng(2)
    base = make(rng, 120, (0, 30))
    queries = make(rng, 16, (0, 30))
    index = index_type()
    base_ids = [f"d{i}" for i in range(len(base))]
    index.add_vectors(base, base_ids)
    expected = index.search(queries, k=8).ids
    extra = [make(rng, 10, (30, VOCAB)) for _ in range(40)]
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(number: int) -> None:
        try:
            for n in range(number, len(extra), 2):
                ids = [f"x{n}-{i}" for i in range(10)]
                index.add_vectors(extra[n], ids)
                index.delete(ids[:3])
                index.add_vectors(extra[n].take(np.arange(3, 6)), ids[3:6], replace=True)
                keep = np.array([n % len(base)])
                index.add_vectors(base.take(keep), [base_ids[keep[0]]], replace=True)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    def reader() -> None:
        try:
            while not stop.is_set():
                got = index.search(queries, k=8).ids
                # Replacing a base document by a copy moves it last among equal scores: with continuous
                # weights no two documents tie, so the ranking is that of the baseline.
                assert got == expected
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    readers = [threading.Thread(target=reader) for _ in range(6)]
    writers = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    for thread in readers:
        thread.join()
    assert not errors, errors[0]
    assert index.search(queries, k=8).ids == expected
    assert len(index) == len(base) + 40 * 7 and len(set(index.ids)) == len(index)
    probe = make(rng, 30, (30, VOCAB))
    batches = {**{f"x{n}-{i}": row for n, b in enumerate(extra) for i, row in enumerate(rows_of(b))},
               **dict(zip(base_ids, rows_of(base)))}
    assert index.search(probe, k=20).ids == brute_force(probe, {d: batches[d] for d in index.ids}, 20)


# -- bad arguments ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_query_term_ids_outside_the_vocabulary_and_bad_k_are_refused(kind: str) -> None:
    index_type, make = KINDS[kind]
    rng = np.random.default_rng(3)
    index = index_type()
    index.add_vectors(make(rng, 30))
    queries = make(rng, 2)
    terms = queries.terms if kind == "sparsembed" else queries
    for bad_id in (VOCAB + 40000, -1):
        indices = terms.indices.copy()
        indices[0] = bad_id
        broken = SparseBatch(terms.indptr, indices, terms.values, VOCAB)
        if kind == "sparsembed":
            broken = SparsEmbedBatch(broken, queries.embeddings)
        with pytest.raises(InputError, match=f"term id {bad_id} is outside the vocabulary"):
            index.search(broken)
    for k in (0, -3, 2.5, True, "10"):
        with pytest.raises(InputError, match="k must be an integer"):
            index.search(queries, k=k)
    huge = index.search(queries, k=10**9)  # clamped to the 30 documents: nothing of size k is allocated
    assert huge.ids == index.search(queries, k=30).ids


# -- index folders ----------------------------------------------------------------------------------


def saved(tmp_path: Path, kind: str, n: int = 40, seed: int = 4):
    index_type, make = KINDS[kind]
    index = index_type(**({"precision": "impact"} if kind == "sparse" else {}))
    index.add_vectors(make(np.random.default_rng(seed), n))
    return index, index.save(tmp_path / "index")


def edit_manifest(path: Path, *, fix_checksum: bool, **fields) -> None:
    manifest = {**json.loads((path / MANIFEST_FILE).read_text()), **fields}
    if fix_checksum:
        manifest["checksum"] = header_checksum(manifest)
    (path / MANIFEST_FILE).write_text(json.dumps(manifest))


@pytest.mark.parametrize("kind", KINDS)
def test_an_edited_manifest_is_caught(tmp_path: Path, kind: str) -> None:
    index, path = saved(tmp_path, kind)
    field = {"impact_scale": 200.0} if kind == "sparse" else {"metadata": {"edited": True}}
    edit_manifest(path, fix_checksum=False, **field)
    with pytest.raises(IndexFormatError, match="index.json: checksum mismatch"):
        type(index).load(path)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("field, value, message", [
    ("vocab_size", 10**12, "expected a 1-D int64 array of length 1000000000001"),
    ("vocab_size", 10**30, "'vocab_size' must be an integer in"),
    ("documents", 10**13, r"segment_ptr-\w+\.npy: expected a 1-D int64 array of length"),
    ("postings", -1, "'postings' must be an integer in"),
    ("documents", "40", "'documents' must be an integer in"),
    ("metadata", [1], "metadata must be an object"),
])
def test_huge_or_mistyped_counts_are_refused_before_allocating(tmp_path: Path, kind: str, field: str, value,
                                                                message: str) -> None:
    index, path = saved(tmp_path, kind)
    edit_manifest(path, fix_checksum=True, **{field: value})
    for mmap in (True, False):
        with pytest.raises(IndexFormatError, match=message):
            type(index).load(path, mmap=mmap)


def test_deeply_nested_or_non_object_manifests_are_refused(tmp_path: Path) -> None:
    _, path = saved(tmp_path, "sparse")
    for text in ("[" * 100_000 + "]" * 100_000, "[1, 2]", "{bad json"):
        (path / MANIFEST_FILE).write_text(text)
        with pytest.raises(IndexFormatError, match="index.json"):
            SparseIndex.load(path)


SAVER = textwrap.dedent("""
    import sys
    import numpy as np
    from spladerunner.retrieval import SparseIndex
    from spladerunner.sparse import SparseBatch

    def version(n):
        rng = np.random.default_rng(n)
        dense = np.where(rng.random((n, 200)) < 0.2, rng.random((n, 200)) + 0.01, 0).astype(np.float32)
        index = SparseIndex()
        indptr = np.concatenate([[0], np.cumsum((dense > 0).sum(1))]).astype(np.int64)
        index.add_vectors(SparseBatch(indptr, np.nonzero(dense > 0)[1].astype(np.int32), dense[dense > 0], 200))
        return index

    old, new = version(3000), version(6000)
    old.save(sys.argv[1])
    print("ready", flush=True)
    while True:
        new.save(sys.argv[1])
        old.save(sys.argv[1])
""")


def test_a_process_killed_at_any_point_of_a_save_leaves_a_loadable_index(tmp_path: Path) -> None:
    """SIGKILL a process that saves two versions in turn, at random moments: the path always loads as one
    of them, complete, and the next save removes what the killed one left."""
    path = tmp_path / "index"
    rng = np.random.default_rng(5)
    seen = set()
    for _ in range(12):
        process = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE, cwd=REPO)
        assert process.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.0, 0.4))
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        index = SparseIndex.load(path)  # verifies every file's sha256
        assert len(index) in (3000, 6000)
        seen.add(len(index))
        index.to_batch()
    index.save(path)
    names = sorted(p.name for p in path.iterdir())
    assert len(names) == 6 and MANIFEST_FILE in names, names  # 5 arrays + index.json, no leftovers
    assert seen  # at least one version observed; usually both


def test_a_failed_write_names_the_file_and_keeps_the_old_index(tmp_path: Path) -> None:
    """A file size limit makes writes fail with EFBIG the way a full disk fails with ENOSPC."""
    index, path = saved(tmp_path, "sparse", n=30)
    script = textwrap.dedent(f"""
        import resource, signal, sys
        import numpy as np
        from spladerunner.retrieval import SparseIndex
        from spladerunner.sparse import SparseBatch
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        rng = np.random.default_rng(0)
        big = SparseBatch(np.arange(0, 200_001, 20, dtype=np.int64), rng.integers(0, {VOCAB}, 200_000).astype(np.int32),
                          rng.uniform(0.1, 1, 200_000).astype(np.float32), {VOCAB})
        index = SparseIndex.load(sys.argv[1], mmap=False)
        index.add_vectors(big, [f"n{{i}}" for i in range(10_000)])
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))
        try:
            index.save(sys.argv[1])
        except OSError as exc:
            print(exc)
            sys.exit(3)
    """)
    result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 3, result.stderr
    assert str(path) in result.stdout and ".npy: write failed" in result.stdout
    assert len(SparseIndex.load(path)) == 30
    assert len(list(path.iterdir())) == 6  # the failed save's files are gone


@pytest.mark.parametrize("kind", KINDS)
def test_a_save_interrupted_by_an_error_at_each_step_keeps_the_old_index(tmp_path: Path, kind: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from spladerunner import index_folder

    index, path = saved(tmp_path, kind, n=20)
    bigger = type(index).load(path, mmap=False)
    bigger.add_vectors(KINDS[kind][1](np.random.default_rng(6), 5), [f"n{i}" for i in range(5)])
    real_fsync = os.fsync
    for step in range(1, 20):
        calls = []

        def failing_fsync(fd: int, calls=calls, step=step) -> None:
            calls.append(fd)
            if len(calls) == step:
                raise OSError(28, "No space left on device")
            real_fsync(fd)

        monkeypatch.setattr(index_folder.os, "fsync", failing_fsync)
        try:
            bigger.save(path)
        except OSError:
            monkeypatch.undo()
            # Before the manifest's rename the old index stands; after it (the folder's fsync) the new one.
            assert len(type(index).load(path)) in (20, 25), step
            assert len(list(path.iterdir())) >= len(json.loads((path / MANIFEST_FILE).read_text())["files"]) + 1
            continue
        monkeypatch.undo()
        assert len(type(index).load(path)) == 25  # every fsync passed: the save completed
        break
    else:
        pytest.fail("the save never completed")


@pytest.mark.parametrize("version", [1, 2])
def test_folders_of_int32_slots_still_load(tmp_path: Path, version: int) -> None:
    """Indexes saved before blocked postings (int32 slots: version 1 without the header checksum and with
    fixed file names, version 2) load, search the same and are saved again as version 3."""
    n = BLOCK + 5000  # two blocks
    rows = np.arange(n)
    terms = np.stack([rows % 50, 50 + rows % 7, 57 + rows % 3], axis=1).reshape(-1)
    values = np.random.default_rng(8).uniform(0.1, 3.0, 3 * n).astype(np.float32)
    index = SparseIndex(precision="impact")
    index.add_vectors(SparseBatch(np.arange(0, 3 * n + 1, 3, dtype=np.int64), terms.astype(np.int32), values, 60))
    queries = SparseBatch(np.array([0, 2, 5]), np.array([3, 52, 1, 50, 58], dtype=np.int32),
                          np.array([1.0, 0.5, 2.0, 1.0, 0.25], dtype=np.float32), 60)
    before = index.search(queries, k=20)
    path = index.save(tmp_path / "index")
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    names = manifest.pop("arrays")
    for name in ("segment_ptr", "offsets"):
        (path / names[name]).unlink()
        manifest["files"].pop(names.pop(name))
    postings = index._postings
    for name, array in {"term_ptr": np.ascontiguousarray(postings.term_ptr), "slots": postings.slots()}.items():
        names[name] = f"{name}-0123456789ab.npy"
        np.save(path / names[name], array)
    for name, file in names.items():
        if version == 1:
            (path / file).rename(path / f"{name}.npy")
            file = names[name] = f"{name}.npy"
        manifest["files"].pop(file, None)
        manifest["files"][file] = {"sha256": hashlib.sha256((path / file).read_bytes()).hexdigest(),
                                   "bytes": (path / file).stat().st_size}
    manifest.pop("block_bits")
    manifest = {**manifest, "version": version, **({"arrays": names} if version == 2 else {})}
    manifest.pop("checksum")
    if version == 2:
        manifest["checksum"] = header_checksum(manifest)
    (path / MANIFEST_FILE).write_text(json.dumps(manifest))
    loaded = SparseIndex.load(path)
    assert loaded.ids == index.ids and loaded.impact_scale == index.impact_scale
    after = loaded.search(queries, k=20)
    assert after.ids == before.ids and all(np.array_equal(a, b) for a, b in zip(after.scores, before.scores))
    loaded.save(path)  # rewritten as version 3; the old files are removed
    assert json.loads((path / MANIFEST_FILE).read_text())["version"] == 3
    assert sorted(p.name.split("-")[0] for p in path.iterdir() if p.name.endswith(".npy")) == [
        "id_bytes", "id_offsets", "offsets", "segment_ptr", "weights"]


def test_a_first_save_interrupted_can_be_saved_over(tmp_path: Path) -> None:
    """A folder holding only a killed first save's files is ours to write into (and says it has no index)."""
    path = tmp_path / "index"
    path.mkdir()
    (path / "offsets-0123456789ab.npy").write_bytes(b"partial")
    with pytest.raises(FileNotFoundError, match="not an index folder"):
        SparseIndex.load(path)
    index = SparseIndex()
    index.add_vectors(sparse_batch(np.random.default_rng(7), 5))
    index.save(path)
    assert len(SparseIndex.load(path)) == 5 and not (path / "offsets-0123456789ab.npy").exists()


# -- SparsEmbedIndex has the same updates as SparseIndex --------------------------------------------


def test_sparsembed_delete_replace_and_len_match_sparse_index(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    docs, queries = sparsembed_batch(rng, 30), sparsembed_batch(rng, 6)
    for index_type, batch, query in ((SparsEmbedIndex, docs, queries), (SparseIndex, docs.terms, queries.terms)):
        index = index_type()
        ids = [f"d{i}" for i in range(30)]
        index.add_vectors(batch, ids)
        assert index.delete(["d3", "d4", "missing"], missing_ok=True) == 2
        with pytest.raises(KeyError):
            index.delete(["d3"])
        assert len(index) == 28 and "d3" not in index and index.ids == ids[:3] + ids[5:]
        index.add_vectors(batch.take(np.array([0])), ["d5"], replace=True)
        with pytest.raises(InputError, match="already indexed"):
            index.add_vectors(batch.take(np.array([0])), ["d5"])
        assert len(index) == 28 and index.ids[-1] == "d5"
        rows = rows_of(batch)
        state = {d: rows[int(d[1:])] for d in ids if d not in ("d3", "d4", "d5")}
        state["d5"] = rows[0]
        assert index.search(query, k=7).ids == brute_force(query, state, 7)
        loaded = index_type.load(index.save(tmp_path / index_type.__name__))
        assert loaded.ids == index.ids and loaded.search(query, k=7).ids == brute_force(query, state, 7)
