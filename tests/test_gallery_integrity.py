"""Gallery integrity against unlucky and hostile conditions: concurrent writers, damaged or deleted
files, read-only galleries. SQLite is the source of truth; the FAISS index is derived data."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from stages.gallery.store import EntryMeta, Gallery, GalleryError, search_vector

ROOT = Path(__file__).resolve().parents[1]
P, C = 4, 8


def vectors(n: int, seed: int = 0) -> list[np.ndarray]:
    return list(np.random.default_rng(seed).normal(size=(n, P, C)).astype(np.float32))


def make_gallery(path: Path, n: int = 12) -> list[np.ndarray]:
    embeddings = vectors(n)
    with Gallery(path) as g:
        g.add("gait", embeddings, [EntryMeta(f"id{i}") for i in range(n)], "gar@1")
    return embeddings


def nearest_names(g: Gallery, embeddings: list[np.ndarray]) -> list[str]:
    _, ids = g.search("gait", np.stack([search_vector(e) for e in embeddings]), 1)
    names = g.identities_of(ids[:, 0])
    return [names[int(i)] for i in ids[:, 0]]


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run_pipeline.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


ENROLLER = textwrap.dedent("""
    import sys, numpy as np
    from stages.gallery.store import Gallery, EntryMeta
    path, seed, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = np.random.default_rng(seed)
    with Gallery(path) as g:
        print("ready", flush=True)
        sys.stdin.readline()  # both writers start together
        for i in range(n):
            e = rng.normal(size=(4, 8)).astype(np.float32)
            name, ids = g.enrol_new_identity("person", {"gait": ([e], [EntryMeta("", f"cam{seed}", i)], "gar@1")})
            print(name, ids["gait"][0], flush=True)
""")


def test_concurrent_auto_enrolment_never_shares_a_name(tmp_path):
    script = tmp_path / "enrol.py"
    script.write_text(ENROLLER)
    path = tmp_path / "g"
    make_gallery(path, 3)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, str(script), str(path), str(seed), "60"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env) for seed in (1, 2)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    outputs = [p.communicate(timeout=300)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    names = [name for out in outputs for name in out[::2]]
    assert len(names) == 120 and len(set(names)) == 120  # every new person got a name of their own
    with Gallery(path, create=False) as g:
        per_identity = {i.name: i.entries.get("gait", 0) for i in g.identities()}
        assert all(per_identity[n] == 1 for n in names)
        sources = {(e.identity, e.source) for e in g.entries() if e.identity in set(names)}
        assert len(sources) == 120
        assert g.count("gait") == 123 and g.index_size("gait") == 123


def test_a_reader_sees_what_another_process_wrote(tmp_path):
    path = tmp_path / "g"
    make_gallery(path, 4)
    with Gallery(path, create=False) as reader:
        assert reader.index_size("gait") == 4
        newcomer = vectors(1, seed=7)
        with Gallery(path) as writer:
            writer.add("gait", newcomer, [EntryMeta("late")], "gar@1")
        assert reader.index_size("gait") == 5
        assert nearest_names(reader, newcomer) == ["late"]


def _damage(file: Path, how: str) -> None:
    data = file.read_bytes()
    if how == "truncated":
        file.write_bytes(data[: len(data) // 2])
    elif how == "zeroed":
        file.write_bytes(bytes(len(data)))
    elif how == "garbled":  # same size, vector bytes changed: readable, but wrong
        middle = len(data) // 2
        file.write_bytes(data[:middle] + bytes(b ^ 0x5A for b in data[middle : middle + 256]) + data[middle + 256 :])
    elif how == "emptied":
        file.write_bytes(b"")
    elif how == "deleted":
        file.unlink()


@pytest.mark.parametrize("how", ["truncated", "zeroed", "garbled", "emptied", "deleted"])
def test_damaged_index_is_rebuilt_from_sqlite_and_never_carried_forward(tmp_path, how):
    path = tmp_path / "g"
    embeddings = make_gallery(path)
    (index,) = path.glob("gait-g*.faiss")
    _damage(index, how)
    with Gallery(path) as g:
        assert g.index_size("gait") == 12
        assert nearest_names(g, embeddings) == [f"id{i}" for i in range(12)]
        extra = vectors(1, seed=3)
        g.add("gait", extra, [EntryMeta("next")], "gar@1")  # the next write starts from the rebuilt index
    with Gallery(path, create=False) as g:
        assert nearest_names(g, [*embeddings, *extra]) == [*(f"id{i}" for i in range(12)), "next"]
    record = json.loads(_meta(path, "index:gait"))
    (index,) = path.glob("gait-g*.faiss")
    from stages.checkpoints import sha256_of

    assert record["entries"] == 13 and record["sha256"] == sha256_of(index)


def _meta(path: Path, key: str) -> str:
    import sqlite3

    with contextlib.closing(sqlite3.connect(path / "gallery.sqlite")) as db:
        return db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]


@pytest.mark.parametrize("how", ["truncated", "zeroed", "garbled", "emptied"])
def test_damaged_database_is_refused_in_one_line_and_left_untouched(tmp_path, how):
    path = tmp_path / "g"
    make_gallery(path)
    db = path / "gallery.sqlite"
    if how == "garbled":  # a page of the entries table overwritten in place
        data = bytearray(db.read_bytes())
        page = int.from_bytes(data[16:18], "big")
        for offset in range(page, len(data), page):
            data[offset : offset + 64] = bytes(64)
        db.write_bytes(bytes(data))
    else:
        _damage(db, how)
    before = db.read_bytes()
    with pytest.raises(GalleryError, match="damaged gallery database"):
        with Gallery(path) as g:
            g.entries()
            g.add("gait", vectors(1), [EntryMeta("x")], "gar@1")
    assert db.read_bytes() == before  # never replaced, never "repaired" into an empty gallery
    for verb in (["gallery", "list"], ["gallery", "remove", "id1"]):
        assert_one_line_error(cli(*verb, "--gallery", str(path)), "damaged gallery database")
    assert db.read_bytes() == before


def test_deleted_database_is_not_replaced_by_an_empty_gallery(tmp_path):
    path = tmp_path / "g"
    make_gallery(path)
    (path / "gallery.sqlite").unlink()
    with pytest.raises(GalleryError, match="database was deleted"):
        Gallery(path)
    assert not (path / "gallery.sqlite").exists()
    assert_one_line_error(cli("gallery", "list", "--gallery", str(path)), "database was deleted")


def test_not_a_gallery_folder_and_file_in_the_way(tmp_path):
    (tmp_path / "file").write_text("x")
    assert_one_line_error(cli("gallery", "list", "--gallery", str(tmp_path / "file")), "not a gallery directory")
    assert_one_line_error(cli("gallery", "list", "--gallery", str(tmp_path / "none")), "no gallery at")
    assert not (tmp_path / "none").exists()


@contextlib.contextmanager
def read_only_view(folder: Path):
    """A read-only bind mount of ``folder`` (EROFS, which binds root too); skips where mounting is not allowed."""
    view = folder.with_name(folder.name + "-ro")
    view.mkdir()
    mounted = subprocess.run(["mount", "--bind", str(folder), str(view)], capture_output=True).returncode == 0
    if mounted and subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], capture_output=True).returncode:
        subprocess.run(["umount", str(view)])
        mounted = False
    if not mounted:
        if os.geteuid() == 0:
            pytest.skip("cannot make a read-only file system here (mount not permitted) and root ignores permissions")
        view.rmdir()
        view = folder
        for p in [folder, *folder.iterdir()]:
            p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        yield view
    finally:
        if mounted:
            if subprocess.run(["umount", str(view)]).returncode:
                subprocess.run(["umount", "-l", str(view)])  # never leave a mount behind
                pytest.fail(f"{view} was still in use: a file of the gallery was left open")
        else:
            for p in [folder, *folder.iterdir()]:
                p.chmod(0o755 if p.is_dir() else 0o644)


def test_read_only_gallery_lists_and_searches_but_refuses_writes(tmp_path):
    path = tmp_path / "g"
    embeddings = make_gallery(path)
    records = tmp_path / "run.jsonl"
    records.write_text(json.dumps({"type": "track", "source": "c.mp4", "track_id": 1, "final": True,
                                   "embeddings": {"gait": embeddings[5].tolist(), "appearance": None},
                                   "model_versions": {"gait": "gar@1"}}) + "\n")
    next(path.glob("gait-g*.faiss")).unlink()  # also: an index that must be rebuilt in memory only
    with read_only_view(path) as view:
        before = sorted(p.name for p in view.iterdir())
        with Gallery(view, create=False) as g:
            assert g.read_only and g.count("gait") == 12
            assert nearest_names(g, embeddings[:3]) == ["id0", "id1", "id2"]
            with pytest.raises(GalleryError, match="read-only"):
                g.add("gait", vectors(1), [EntryMeta("x")], "gar@1")
        listing = cli("gallery", "list", "--gallery", str(view), "--json")
        assert listing.returncode == 0, listing.stderr
        assert json.loads(listing.stdout)["entries"]["gait"] == 12
        search = cli("search", "--gallery", str(view), "--jsonl", str(records), "--reranker", "none", "--json")
        assert search.returncode == 0, search.stderr
        assert json.loads(search.stdout)["candidates"][0]["identity"] == "id5"
        assert_one_line_error(cli("gallery", "remove", "id3", "--gallery", str(view)), "read-only")
        assert sorted(p.name for p in view.iterdir()) == before


def test_search_of_an_empty_gallery_prints_strict_json(tmp_path):
    path = tmp_path / "g"
    with Gallery(path):
        pass
    records = tmp_path / "run.jsonl"
    records.write_text(json.dumps({"type": "track", "source": "c.mp4", "track_id": 1, "final": True,
                                   "embeddings": {"gait": vectors(1)[0].tolist(), "appearance": None},
                                   "model_versions": {"gait": "gar@1"}}) + "\n")
    proc = cli("search", "--gallery", str(path), "--jsonl", str(records), "--reranker", "none", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "Infinity" not in proc.stdout and "NaN" not in proc.stdout
    result = json.loads(proc.stdout, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert result["distance"] is None and result["identity"] is None
