"""Gallery store, FAISS indexes, calibration, the GalleryMatcher stage and the CLI verbs."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cli.gallery import enroll_main, gallery_main, search_main
from pipeline.messages import SilhouetteSequence, TrackWindow
from stages.gait.distance import part_distance
from stages.gallery.calibration import calibrate, calibration_distances
from stages.gallery.index import IndexSpec, build_index
from stages.gallery.stage import GalleryMatcher
from stages.gallery.store import EntryMeta, Gallery, GalleryError, GalleryModelMismatch, search_vector
from stages.rerank.model import CarGait
from stages.rerank.weights import save_reranker

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
P, C = 4, 8


def identities(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, P, C)).astype(np.float32)


def sample(proto: np.ndarray, rng: np.random.Generator, noise: float = 0.15) -> np.ndarray:
    return (proto + rng.normal(scale=noise, size=proto.shape)).astype(np.float32)


def window(embedding: np.ndarray | None, track: int = 1, final: bool = True, appearance: np.ndarray | None = None,
           source: str = "cam1", version: str = "gar@1") -> TrackWindow:
    t = 3
    seq = SilhouetteSequence(
        silhouettes=np.zeros((t, 64, 44), np.uint8), ratios=np.ones(t, np.float32), boxes=np.zeros((t, 4), np.float32),
        frame_indices=np.arange(t), pts_s=np.arange(t) / 10.0, frame_size=(240, 320),
    )
    w = TrackWindow(source, track, 0, final, seq, gait_embedding=embedding, appearance_embedding=appearance)
    w.model_versions["gait"] = version
    w.model_versions["reid"] = "reid@1"
    return w


def test_search_vector_inner_product_is_opengait_cosine():
    x, y = identities(3, 1), identities(5, 2)
    ip = np.stack([search_vector(a) for a in x]) @ np.stack([search_vector(b) for b in y]).T
    assert np.allclose(1.0 - ip, part_distance(x, y, "cos"), atol=1e-5)
    assert np.isclose(np.linalg.norm(search_vector(x[0])), 1.0)


def test_add_search_reopen_remove(tmp_path):
    protos = identities(6)
    rng = np.random.default_rng(1)
    with Gallery(tmp_path / "g") as g:
        ids = g.add("gait", [sample(p, rng) for p in protos], [EntryMeta(f"id{i}", "cam", i, 0.0, 1.5) for i in range(6)], "gar@1")
        assert ids == sorted(ids) and g.count("gait") == 6
    with Gallery(tmp_path / "g", create=False) as g:
        assert g.index_size("gait") == 6
        _, found = g.search("gait", np.stack([search_vector(sample(protos[3], rng))]), 2)
        assert g.identities_of(found[0])[int(found[0][0])] == "id3"
        entry = g.entries("id3")[0]
        assert (entry.source, entry.track_id, entry.t_end, entry.shape) == ("cam", 3, 1.5, (P, C))
        assert g.remove_identity("id3") == 1
        assert g.index_size("gait") == 5 and "id3" not in {i.name for i in g.identities()}
        with pytest.raises(GalleryError, match="no identity"):
            g.remove_identity("id3")
    files = sorted(p.name for p in (tmp_path / "g").iterdir())
    assert [f for f in files if f.endswith(".faiss")] == ["gait-g2.faiss"]  # one generation kept


def test_other_model_is_refused_with_a_clear_message(tmp_path):
    with Gallery(tmp_path / "g") as g:
        g.add("gait", [identities(1)[0]], [EntryMeta("a")], "gar@1")
        with pytest.raises(GalleryModelMismatch, match="gar@1.*not 'gar@2'"):
            g.add("gait", [identities(1)[0]], [EntryMeta("b")], "gar@2")
    with pytest.raises(GalleryError, match="no gallery"):
        Gallery(tmp_path / "missing", create=False)


def test_stale_or_missing_index_is_rebuilt_from_sqlite(tmp_path):
    protos = identities(4)
    with Gallery(tmp_path / "g") as g:
        g.add("gait", list(protos[:2]), [EntryMeta("a"), EntryMeta("b")], "gar@1")
    # a later transaction whose index file never got written (killed before flush)
    db = sqlite3.connect(tmp_path / "g" / "gallery.sqlite")
    db.execute("UPDATE meta SET value = '7' WHERE key = 'generation:gait'")
    db.commit()
    db.close()
    with Gallery(tmp_path / "g") as g:
        assert g.index_size("gait") == 2
    assert (tmp_path / "g" / "gait-g7.faiss").exists()


WRITER = textwrap.dedent("""
    import sys, numpy as np
    sys.path.insert(0, sys.argv[2])
    from stages.gallery.store import Gallery, EntryMeta
    rng = np.random.default_rng(0)
    g = Gallery(sys.argv[1])
    print("ready", flush=True)
    i = 0
    while True:
        batch = [rng.normal(size=(4, 8)).astype(np.float32) for _ in range(25)]
        g.add("gait", batch, [EntryMeta(f"p{i}-{j}") for j in range(25)], "gar@1")
        g.flush()
        i += 1
""")


@pytest.mark.parametrize("delay", [0.05, 0.4, 1.0])
def test_kill_during_writes_leaves_a_consistent_gallery(tmp_path, delay):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    path = tmp_path / "g"
    proc = subprocess.Popen([sys.executable, str(script), str(path), str(ROOT)], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with Gallery(path, create=False) as g:
        n = g.count("gait")
        assert n % 25 == 0  # every batch is all or nothing
        if delay >= 1.0:
            assert n > 0  # the writer did get batches in before the kill
        assert g.index_size("gait") == n
        if n:
            e = g.entries()[-1]
            feat = g.features([e.entry_id])[e.entry_id]
            _, found = g.search("gait", search_vector(feat)[None], 1)
            assert int(found[0, 0]) == e.entry_id
    db = sqlite3.connect(path / "gallery.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_recall_against_exact(kind):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(50, 32))
    x = centres[rng.integers(0, 50, 4000)] + rng.normal(scale=0.3, size=(4000, 32))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    ids = np.arange(4000, dtype=np.int64)
    q = x[:100] + rng.normal(scale=0.05, size=(100, 32)).astype(np.float32)
    exact = build_index(x, ids, IndexSpec("flat"))
    approx = build_index(x, ids, IndexSpec(kind, nlist=64, nprobe=8, hnsw_m=16, ef_search=64))
    _, ie = exact.search(q, 10)
    _, ia = approx.search(q, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(ia, ie)])
    assert recall >= 0.9


def test_calibration_threshold_and_confidence():
    rng = np.random.default_rng(0)
    cal = calibrate(rng.normal(1.0, 0.2, 2000), rng.normal(2.0, 0.3, 8000), "euc", "gar@1", "synthetic", 0.01)
    assert abs(cal.far - 0.01) < 0.002
    assert 0.04 < cal.frr < 0.09  # genuine above 2.0 - 2.33 * 0.3: about 1.5 sigma, 6.7%
    c = cal.confidence(np.array([0.5, 1.5, 3.0]))
    assert c[0] > 0.95 and c[2] < 0.05 and np.all(np.diff(c) < 0)


def _calibrated_matcher(tmp_path: Path, protos: np.ndarray, reranker: str = "none", **kw) -> GalleryMatcher:
    rng = np.random.default_rng(5)
    with Gallery(tmp_path / "g") as g:
        g.add("gait", [sample(p, rng) for p in protos], [EntryMeta(f"id{i}") for i in range(len(protos))], "gar@1")
        feats = np.concatenate([np.stack([sample(p, rng) for p in protos]) for _ in range(4)])
        subjects = np.tile(np.arange(len(protos)), 4)
        genuine, impostor = calibration_distances(feats, subjects, np.arange(len(feats)) < len(protos), "euc")
        g.set_calibration("gait", calibrate(genuine, impostor, "euc", "gar@1", "synthetic", 0.01))
    return GalleryMatcher(gallery=str(tmp_path / "g"), reranker=reranker, **kw)


def test_matcher_identifies_known_and_rejects_unknown(tmp_path):
    protos = identities(20)
    matcher = _calibrated_matcher(tmp_path, protos[:15], top_k=5)
    rng = np.random.default_rng(9)
    windows = [window(sample(protos[2], rng)), window(sample(protos[18], rng), track=2), window(None, track=3)]
    out = matcher.process(windows)
    known, unknown, empty = out
    assert known.identity.identity == "id2" and known.identity.confidence > 0.5 and known.identity.modality == "gait"
    assert known.identity.candidates[0].identity == "id2" and len(known.identity.candidates) == 5
    assert [c.initial_rank for c in known.identity.candidates] == list(range(5))  # no re-ranker: order kept
    assert unknown.identity.identity is None and unknown.identity.distance > known.identity.distance
    assert empty.identity is None
    assert all(w.model_versions["gallery"] == matcher.version for w in out)
    matcher.close()


def test_auto_enrol_links_a_new_person_across_cameras(tmp_path):
    protos = identities(12)
    matcher = _calibrated_matcher(tmp_path, protos[:10], auto_enrol=True)
    rng = np.random.default_rng(3)
    newcomer = protos[11]
    first = matcher.process([window(sample(newcomer, rng), track=7, final=False)])[0]
    assert first.identity.identity is None and not first.identity.enrolled  # not final: no enrolment
    final = matcher.process([window(sample(newcomer, rng), track=7, final=True)])[0]
    assert final.identity.enrolled and final.identity.identity.startswith("person-")
    other_cam = matcher.process([window(sample(newcomer, rng), track=1, source="cam2", final=False)])[0]
    assert other_cam.identity.identity == final.identity.identity and not other_cam.identity.enrolled
    entry = matcher.gallery.entries(final.identity.identity)[0]
    assert (entry.source, entry.track_id) == ("cam1", 7)
    assert any(i.auto for i in matcher.gallery.identities())
    matcher.close()


def test_matcher_reranks_with_cargait_and_refuses_other_models(tmp_path):
    protos = identities(15)
    torch.manual_seed(0)
    model = CarGait(P, C, 0, hidden=16, heads=2)
    torch.nn.init.normal_(model.cross.out.weight, std=0.3)
    save_reranker(model, tmp_path / "cg.pt", gait_model_version="gar@1", metric="euc", rerank_k=10)
    matcher = _calibrated_matcher(tmp_path, protos, reranker=str(tmp_path / "cg.pt"), gait_threshold=100.0)
    rng = np.random.default_rng(2)
    q = sample(protos[4], rng, noise=0.6)
    w = matcher.process([window(q)])[0]
    cands = w.identity.candidates
    feats = matcher.gallery.features([c.entry_id for c in cands])
    with torch.no_grad():
        expected = [float(model(torch.as_tensor(q)[None], torch.as_tensor(feats[c.entry_id])[None])[2]) for c in cands]
    assert np.allclose([c.distance for c in cands], expected, atol=1e-4)
    assert [c.distance for c in cands] == sorted(c.distance for c in cands)
    initial = part_distance(q[None], np.stack([feats[c.entry_id] for c in cands]), "euc")[0]
    assert [c.initial_rank for c in cands] == list(np.argsort(np.argsort(initial)))
    with pytest.raises(GalleryModelMismatch):
        matcher.process([window(q, version="gar@2")])
    matcher.close()
    other = GalleryMatcher(gallery=str(tmp_path / "other"), reranker=str(tmp_path / "cg.pt"))
    with pytest.raises(ValueError, match="trained on gait model 'gar@1'"):
        other.process([window(q, version="gar@2")])
    other.close()


def test_appearance_path_and_missing_calibration_notice(tmp_path):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(3, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    with Gallery(tmp_path / "g") as g:
        g.add("appearance", list(emb), [EntryMeta(n) for n in "abc"], "reid@1")
    matcher = GalleryMatcher(gallery=str(tmp_path / "g"), reranker="none")
    w = matcher.process([window(None, appearance=emb[1])])[0]
    assert w.identity.modality == "appearance" and w.identity.identity is None  # uncalibrated: no decision
    assert w.identity.candidates[0].identity == "b" and w.identity.candidates[0].distance < 1e-5
    assert "no appearance calibration" in w.errors[0]
    matcher.close()
    matcher = GalleryMatcher(gallery=str(tmp_path / "g"), reranker="none", appearance_threshold=0.2)
    assert matcher.process([window(None, appearance=emb[1])])[0].identity.identity == "b"
    matcher.close()


def _records(path: Path, protos: np.ndarray, rng) -> None:
    lines = []
    for track, p in enumerate(protos):
        for final in (False, True):
            lines.append({"type": "track", "source": "clip.mp4", "track_id": track, "final": final,
                          "time_s": {"start": 1.0, "end": 4.0}, "attributes": {"gender": {"label": "male", "probability": 0.9}},
                          "embeddings": {"gait": sample(p, rng).tolist(), "appearance": None},
                          "model_versions": {"gait": "gar@1"}})
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n")


def test_cli_enroll_list_search_export_remove(tmp_path, capsys):
    protos = identities(6)
    rng = np.random.default_rng(4)
    records = tmp_path / "run.jsonl"
    _records(records, protos, rng)
    gal = str(tmp_path / "g")
    with pytest.raises(GalleryError, match="6 tracks match"):
        enroll_main(["--gallery", gal, "--name", "x", "--jsonl", str(records)])
    for t in range(5):
        assert enroll_main(["--gallery", gal, "--name", f"person{t}", "--jsonl", str(records), "--track", str(t)]) == 0
    feats = np.concatenate([np.stack([sample(p, rng) for p in protos[:5]]) for _ in range(4)])
    np.savez(tmp_path / "feat.npz", embeddings=feats, labels=np.tile(np.arange(5), 4).astype(str),
             types=np.array(["nm-01"] * 5 + ["nm-05"] * 15), views=np.array(["090"] * 20))
    assert gallery_main(["calibrate", "--gallery", gal, "--features", str(tmp_path / "feat.npz"), "--reranker", "none"]) == 0
    capsys.readouterr()
    assert gallery_main(["list", "--gallery", gal, "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["entries"]["gait"] == 5 and listing["models"]["gait"] == "gar@1" and "gait:euc" in listing["calibrations"]
    assert search_main(["--gallery", gal, "--jsonl", str(records), "--reranker", "none", "--json"]) == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_track = {r["track_id"]: r for r in results}
    assert by_track[2]["identity"] == "person2" and by_track[2]["calibrated"]
    assert by_track[5]["identity"] is None  # never enrolled
    assert gallery_main(["export", "--gallery", gal, str(tmp_path / "out.json"), "--vectors", str(tmp_path / "v.npz")]) == 0
    doc = json.loads((tmp_path / "out.json").read_text())
    assert len(doc["entries"]) == 5 and doc["entries"][0]["attributes"] == {"gender": "male"}
    assert len(np.load(tmp_path / "v.npz").files) == 5
    assert gallery_main(["remove", "--gallery", gal, "person2"]) == 0
    with Gallery(gal, create=False) as g:
        assert g.count("gait") == 4
