"""Gallery store, FAISS indexes, the GalleryMatcher stage (track-level, fused, auto-enrol) and the CLI verbs."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from cli.gallery import enroll_main, gallery_main, search_main
from pipeline.errors import UserError
from pipeline.messages import SilhouetteSequence, TrackWindow
from stages.gait.distance import part_distance
from stages.gallery.index import IndexSpec, build_index
from stages.gallery.scoring import Fusion, ModalityScore, ScoreModel
from stages.gallery.stage import GalleryMatcher, TrackEvidence
from stages.gallery.store import EntryMeta, Gallery, GalleryError, GalleryModelMismatch, search_vector

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
P, C = 4, 8


def identities(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, P, C)).astype(np.float32)


def sample(proto: np.ndarray, rng: np.random.Generator, noise: float = 0.15) -> np.ndarray:
    return (proto + rng.normal(scale=noise, size=proto.shape)).astype(np.float32)


def window(embedding: np.ndarray | None, track: int = 1, final: bool = True, appearance: np.ndarray | None = None,
           source: str = "cam1", version: str = "gar@1", start: int = 0, frames: int = 30) -> TrackWindow:
    t = frames
    seq = SilhouetteSequence(
        silhouettes=np.zeros((t, 64, 44), np.uint8), ratios=np.ones(t, np.float32), boxes=np.zeros((t, 4), np.float32),
        frame_indices=start + np.arange(t, dtype=np.int64), pts_s=(start + np.linspace(0, 2, t)) / 10.0,
        frame_size=(240, 320),
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
        print("flushed", flush=True)
""")


@pytest.mark.parametrize("flushed", [0, 1, 6])
def test_kill_during_writes_leaves_a_consistent_gallery(tmp_path, flushed):
    """Killed while writing, after a known number of flushed batches: wherever the kill lands in the
    next batch, the gallery opens with whole batches only and an index that agrees with the database."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    path = tmp_path / "g"
    proc = subprocess.Popen([sys.executable, str(script), str(path), str(ROOT)], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    for _ in range(flushed):
        assert proc.stdout.readline().strip() == b"flushed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with Gallery(path, create=False) as g:
        n = g.count("gait")
        assert n % 25 == 0  # every batch is all or nothing
        assert n >= 25 * flushed
        assert g.index_size("gait") == n
        if n:
            e = g.entries()[-1]
            feat = g.features([e.entry_id])[e.entry_id]
            _, found = g.search("gait", search_vector(feat)[None], 1)
            assert int(found[0, 0]) == e.entry_id
    db = sqlite3.connect(path / "gallery.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()


def test_a_checkpoint_cut_short_by_a_crash_still_opens(tmp_path):
    """Killed mid-checkpoint, the database file is shorter than its new header says while the
    write-ahead log still holds every page: that is a gallery SQLite recovers, not a damaged one."""
    path = tmp_path / "g"
    rng = np.random.default_rng(0)
    with Gallery(path) as g:
        g.add("gait", [rng.normal(size=(P, C)).astype(np.float32) for _ in range(5)], [EntryMeta(f"a{i}") for i in range(5)], "gar@1")
    keeper = sqlite3.connect(path / "gallery.sqlite")  # a second connection: closing the gallery leaves the log unmerged
    keeper.execute("SELECT COUNT(*) FROM sqlite_master").fetchall()
    with Gallery(path) as g:
        g.add("gait", [rng.normal(size=(P, C)).astype(np.float32) for _ in range(300)],
              [EntryMeta(f"b{i}") for i in range(300)], "gar@1")
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    for f in path.iterdir():
        if not f.name.endswith("-shm"):
            (crashed / f.name).write_bytes(f.read_bytes())
    keeper.close()
    db = crashed / "gallery.sqlite"
    assert (crashed / "gallery.sqlite-wal").stat().st_size > 0
    data = bytearray(db.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    data[28:32] = (len(data) // page_size + 8).to_bytes(4, "big")  # page 1 written, the pages after it not yet
    data[92:96] = data[24:28]
    db.write_bytes(bytes(data))
    with Gallery(crashed, create=False) as g:
        assert g.count("gait") == 305 and g.index_size("gait") == 305
    check = sqlite3.connect(db)
    assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    check.close()


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


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


D = 16


def appearances(n: int, seed: int = 10) -> np.ndarray:
    return unit(np.random.default_rng(seed).normal(size=(n, D)))


def app_sample(proto: np.ndarray, rng: np.random.Generator, noise: float = 0.15) -> np.ndarray:
    return unit(proto + rng.normal(scale=noise, size=proto.shape))


def fitted_scores(path: Path, outfit_change: float = 0.4, seed: int = 0) -> Path:
    """Score-fusion parameters fitted, with the shipped fitting functions, on labelled pairs of the
    synthetic embeddings above: people sometimes change clothes (a new appearance prototype), gait stays."""
    rng = np.random.default_rng(seed)
    gait, app = identities(40, seed + 1), appearances(40, seed + 2)
    d = {"gait": [], "appearance": []}
    same = []
    for _ in range(3000):
        a, b = rng.integers(0, 40, 2)
        genuine = rng.random() < 0.5
        b = a if genuine else (b if b != a else (a + 1) % 40)
        other_outfit = appearances(1, int(rng.integers(1 << 30)))[0] if genuine and rng.random() < outfit_change else app[b]
        d["gait"].append(part_distance(sample(gait[a], rng)[None], sample(gait[b], rng)[None], "euc")[0, 0])
        d["appearance"].append(1.0 - float(app_sample(app[a], rng) @ app_sample(other_outfit, rng)))
        same.append(genuine)
    same = np.asarray(same)
    scores, llr = {}, {}
    for m, scorer in (("gait", "euc"), ("appearance", "cos")):
        x = np.asarray(d[m])
        for aggregate in ("best", "mean"):
            scores[ScoreModel.score_key(m, scorer, aggregate)] = ModalityScore.fit(x[same], x[~same])
        llr[m] = scores[ScoreModel.score_key(m, scorer, "best")].llr(x)
    fusion = Fusion.fit(llr, same)
    thresholds = {ScoreModel.threshold_key(mode, g, a): 2.0 for mode, g in (("fused", "euc"), ("gait", "euc"), ("appearance", "-"))
                  for a in ("best", "mean")}
    model = ScoreModel(scores, {"euc/best": fusion, "euc/mean": fusion}, thresholds, 0.01, {"gait": "gar@1", "appearance": "reid@1"},
                       source_prior=None)
    model.save(path)
    return path


@pytest.fixture(scope="module")
def scores_file(tmp_path_factory) -> str:
    return str(fitted_scores(tmp_path_factory.mktemp("scores") / "scores.params.json"))


def test_distance_calibration_is_a_log_likelihood_ratio():
    rng = np.random.default_rng(0)
    score = ModalityScore.fit(rng.normal(1.0, 0.3, 4000), rng.normal(2.0, 0.3, 4000))
    llr = score.llr(np.array([0.5, 1.5, 2.5]))
    # equal variances: LLR = (mu1 - mu0)/s^2 * (1.5 - d), zero half-way, slope -1/0.09
    assert abs(llr[1]) < 0.3 and llr[0] > 4 and llr[2] < -4
    assert abs(score.slope + 1 / 0.09) < 1.5


def test_fusion_lets_gait_carry_the_decision_when_clothes_change(tmp_path):
    model = ScoreModel.load(fitted_scores(tmp_path / "s.params.json", outfit_change=0.4))
    fusion = model.fusion_for("fused", "euc", "best")
    # appearance disagreement is learned to be weak evidence (clothes change), agreement strong
    assert fusion.disagree["appearance"] < 0.5 * fusion.agree["appearance"]
    g, a = model.modality_score("gait", "euc", "best"), model.modality_score("appearance", "cos", "best")
    gait_close, gait_far = float(g.llr(0.6)), float(g.llr(4.0))  # typical genuine / impostor distances
    app_far, app_close = float(a.llr(1.0)), float(a.llr(0.25))
    assert gait_close > 0 > gait_far and app_close > 0 > app_far
    # candidate A: same gait, other clothes; candidate B: other gait, similar clothes
    same_walker_new_clothes = float(fusion.score({"gait": gait_close, "appearance": app_far})[0])
    other_walker_like_clothes = float(fusion.score({"gait": gait_far, "appearance": 0.5 * app_close})[0])
    assert same_walker_new_clothes > other_walker_like_clothes
    assert same_walker_new_clothes > 0  # still more likely the same person than not
    # a missing modality contributes its fitted constant, not a guess; single modes are the modality alone
    alone = float(fusion.score({"gait": gait_close, "appearance": None})[0])
    expected = fusion.bias + fusion.agree["gait"] * gait_close + fusion.missing["appearance"]
    assert np.isclose(alone, expected)
    assert np.isclose(float(model.fusion_for("gait", "euc", "best").score({"gait": gait_far, "appearance": app_close})[0]), gait_far)


def test_score_model_round_trip_and_bad_file(tmp_path, scores_file):
    model = ScoreModel.load(scores_file)
    model.save(tmp_path / "again.json")
    assert ScoreModel.load(tmp_path / "again.json") == model
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not a score-fusion file"):
        ScoreModel.load(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="training.fusion"):
        ScoreModel.load(tmp_path / "missing.json")


def _gallery(tmp_path: Path, gait: np.ndarray, app: np.ndarray, n: int) -> str:
    rng = np.random.default_rng(5)
    with Gallery(tmp_path / "g") as g:
        g.add("gait", [sample(p, rng) for p in gait[:n]], [EntryMeta(f"id{i}", "enrol") for i in range(n)], "gar@1")
        g.add("appearance", [app_sample(p, rng) for p in app[:n]], [EntryMeta(f"id{i}", "enrol") for i in range(n)], "reid@1")
    return str(tmp_path / "g")


def test_matcher_fuses_track_evidence_and_rejects_unknown(tmp_path, scores_file):
    gait, app = identities(20), appearances(20)
    matcher = GalleryMatcher(gallery=_gallery(tmp_path, gait, app, 15), scores=scores_file, reranker="none",
                             source_centring=False, top_k=5)
    rng = np.random.default_rng(9)
    known = [window(sample(gait[2], rng), appearance=app_sample(app[2], rng), final=i == 2, start=30 * i) for i in range(3)]
    stranger = window(sample(gait[18], rng), appearance=app_sample(app[18], rng), track=2)
    appearance_only = window(None, appearance=app_sample(app[7], rng), track=3)
    out = matcher.process([*known, stranger, appearance_only, window(None, track=4)])
    final = out[2].identity
    assert [w.identity.identity for w in out[:3]] == ["id2"] * 3  # every window reports the track's decision
    assert final.modality == "fused" and final.windows == 3 and final.confidence > 0.9
    assert set(final.scores) == {"gait", "appearance", "fused"} and final.scores["fused"] > 2.0
    assert final.candidates[0].identity == "id2" and final.candidates[0].score == final.scores["fused"]
    assert out[3].identity.identity is None and out[3].identity.scores["fused"] < final.scores["fused"]
    assert out[4].identity.identity == "id7" and set(out[4].identity.scores) == {"appearance", "fused"}
    assert out[5].identity.identity is None and out[5].identity.candidates == []
    assert all(w.model_versions["gallery"] == matcher.version for w in out)
    matcher.close()


def test_gait_only_and_appearance_only_modes(tmp_path, scores_file):
    gait, app = identities(10), appearances(10)
    path = _gallery(tmp_path, gait, app, 10)
    rng = np.random.default_rng(1)
    # the walker of id4 in the clothes of id6
    w = window(sample(gait[4], rng), appearance=app_sample(app[6], rng))
    by_mode = {}
    for mode in ("gait", "appearance", "fused"):
        m = GalleryMatcher(gallery=path, scores=scores_file, reranker="none", modalities=mode, source_centring=False)
        by_mode[mode] = m.process([window(w.gait_embedding, appearance=w.appearance_embedding)])[0].identity
        m.close()
    assert by_mode["gait"].candidates[0].identity == "id4" and set(by_mode["gait"].scores) == {"gait", "fused"}
    assert by_mode["appearance"].candidates[0].identity == "id6"
    assert by_mode["fused"].candidates[0].identity == "id4"  # gait carries it when clothes disagree
    with pytest.raises(ValueError, match="modalities must be one of"):
        GalleryMatcher(gallery=path, scores=scores_file, modalities="both")


def test_auto_enrol_links_one_person_over_three_cameras_and_stores_everything(tmp_path, scores_file):
    gait, app = identities(12), appearances(12)
    matcher = GalleryMatcher(gallery=_gallery(tmp_path, gait, app, 10), scores=scores_file, reranker="none",
                             source_centring=False, auto_enrol=True, threshold=2.0)
    rng = np.random.default_rng(3)
    newcomer = 11

    def track(source: str, track_id: int) -> list[TrackWindow]:
        return [window(sample(gait[newcomer], rng), appearance=app_sample(app[newcomer], rng), track=track_id,
                       source=source, final=i == 1, start=30 * i) for i in range(2)]

    first = matcher.process(track("cam1", 7))
    assert first[0].identity.identity is None and not first[0].identity.enrolled  # not final: no enrolment
    assert first[1].identity.enrolled and first[1].identity.identity.startswith("person-")
    name = first[1].identity.identity
    entries = matcher.gallery.entries(name)
    assert sorted(e.modality for e in entries) == ["appearance"] * 2 + ["gait"] * 2  # every window, both modalities
    assert {(e.source, e.track_id) for e in entries} == {("cam1", 7)}
    second = matcher.process(track("cam2", 1))
    third = matcher.process(track("cam3", 4))
    assert [w.identity.identity for w in second + third] == [name] * 4 and not third[1].identity.enrolled
    assert len(matcher.gallery.entries(name)) == 12  # later tracks are added to the identity
    assert sum(i.name.startswith("person-") for i in matcher.gallery.identities()) == 1
    matcher.close()


def test_an_identity_is_started_by_the_frames_a_track_showed_not_by_its_span(tmp_path, scores_file):
    gait, app = identities(12), appearances(12)
    rng = np.random.default_rng(4)

    def flickering(person: int, track_id: int) -> list[TrackWindow]:
        """Two overlapping windows of 30 frames each, of which the person was seen in every sixth."""
        out = []
        for i, start in enumerate((0, 15)):
            w = window(sample(gait[person], rng), appearance=app_sample(app[person], rng), track=track_id,
                       final=i == 1, start=start)
            keep = w.sequence.frame_indices % 6 == 0
            seq = w.sequence
            w.sequence = SilhouetteSequence(seq.silhouettes[keep], seq.ratios[keep], seq.boxes[keep],
                                            seq.frame_indices[keep], seq.pts_s[keep], seq.frame_size)
            out.append(w)
        return out

    matcher = GalleryMatcher(gallery=_gallery(tmp_path, gait, app, 10), scores=scores_file, reranker="none",
                             source_centring=False, auto_enrol=True, threshold=2.0, min_enrol_frames=10)
    sparse = matcher.process(flickering(10, 1))  # frames 0-44, seen in 0, 6, ..., 42: eight frames
    assert sparse[-1].identity.identity is None and not sparse[-1].identity.enrolled
    dense = matcher.process([window(sample(gait[11], rng), appearance=app_sample(app[11], rng), track=2, final=i == 1,
                                    start=15 * i) for i in range(2)])  # frames 0-44, all seen: 45 frames
    assert dense[-1].identity.enrolled
    matcher.close()


def test_a_track_linking_two_identities_merges_them(tmp_path, scores_file):
    gait, app = identities(3), appearances(3)
    with Gallery(tmp_path / "g") as g:
        for name in ("a", "b"):  # one person enrolled twice under two names
            g.add("gait", [sample(gait[0], np.random.default_rng(len(name)))], [EntryMeta(name)], "gar@1")
            g.add("appearance", [app[0]], [EntryMeta(name)], "reid@1")
        g.add("gait", [gait[1]], [EntryMeta("c")], "gar@1")
    matcher = GalleryMatcher(gallery=str(tmp_path / "g"), scores=scores_file, reranker="none", source_centring=False,
                             auto_enrol=True, threshold=2.0)
    w = matcher.process([window(sample(gait[0], np.random.default_rng(7)), appearance=app[0])])[0]
    kept = w.identity.identity
    assert kept in ("a", "b") and w.identity.merged == [({"a", "b"} - {kept}).pop()]
    merges = matcher.gallery.merges()
    assert len(merges) == 1 and merges[0]["kept"] == kept and merges[0]["entries"] == 2
    assert {i.name for i in matcher.gallery.identities()} == {kept, "c"} and len(matcher.gallery.entries(kept)) == 6
    matcher.close()


def test_source_centring_removes_a_camera_cast(tmp_path, scores_file):
    from stages.gallery.matching import SourceCentring

    rng = np.random.default_rng(0)
    app = appearances(6, 3)
    cast = {"north": 1.5 * unit(rng.normal(size=D)), "south": 1.5 * unit(rng.normal(size=D))}
    seen = {src: unit(app + cast[src] + rng.normal(scale=0.05, size=app.shape)) for src in cast}
    centring = SourceCentring(prior=0.0)
    for src, x in seen.items():
        centring.add(src, x)
    raw = seen["north"] @ seen["south"].T
    centred = centring.centre(seen["north"], ["north"] * 6) @ centring.centre(seen["south"], ["south"] * 6).T
    assert (raw.argmax(1) == np.arange(6)).mean() < 1.0 or raw.max() > 0.9  # the cast dominates raw similarity
    assert (centred.argmax(1) == np.arange(6)).all()
    assert np.diag(centred).min() > np.diag(raw).min() - 1.0


def _records(path: Path, protos: np.ndarray, rng) -> None:
    lines = []
    app = appearances(len(protos))
    for track, p in enumerate(protos):
        for final in (False, True):
            lines.append({"type": "track", "source": "clip.mp4", "track_id": track, "final": final,
                          "time_s": {"start": 1.0, "end": 4.0}, "attributes": {"gender": {"label": "male", "probability": 0.9}},
                          "embeddings": {"gait": sample(p, rng).tolist(), "appearance": app_sample(app[track], rng).tolist()},
                          "model_versions": {"gait": "gar@1", "reid": "reid@1"}})
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n")


def test_cli_enroll_list_search_export_remove(tmp_path, capsys, scores_file):
    protos = identities(6)
    rng = np.random.default_rng(4)
    records = tmp_path / "run.jsonl"
    _records(records, protos, rng)
    gal = str(tmp_path / "g")
    with pytest.raises(GalleryError, match="6 tracks match"):
        enroll_main(["--gallery", gal, "--name", "x", "--jsonl", str(records)])
    for t in range(5):
        assert enroll_main(["--gallery", gal, "--name", f"person{t}", "--jsonl", str(records), "--track", str(t)]) == 0
    capsys.readouterr()
    assert gallery_main(["list", "--gallery", gal, "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    # every window of each track, both modalities
    assert listing["entries"] == {"gait": 10, "appearance": 10} and listing["models"]["gait"] == "gar@1"
    assert search_main(["--gallery", gal, "--jsonl", str(records), "--reranker", "none", "--scores", scores_file, "--json"]) == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_track = {r["track_id"]: r for r in results}
    assert by_track[2]["identity"] == "person2" and by_track[2]["windows"] == 2 and by_track[2]["scores"]["fused"] > 2
    assert by_track[5]["identity"] is None  # never enrolled
    assert gallery_main(["export", "--gallery", gal, str(tmp_path / "out.json"), "--vectors", str(tmp_path / "v.npz")]) == 0
    doc = json.loads((tmp_path / "out.json").read_text())
    assert len(doc["entries"]) == 20 and doc["entries"][0]["attributes"] == {"gender": "male"}
    assert len(np.load(tmp_path / "v.npz").files) == 20
    assert gallery_main(["remove", "--gallery", gal, "person2"]) == 0
    with Gallery(gal, create=False) as g:
        assert g.count("gait") == 8


def test_cli_enroll_keeps_the_windows_since_the_person_in_the_box_changed(tmp_path, capsys, scores_file):
    import dataclasses

    from stages.gallery.scoring import MIXED_SPREAD

    model = ScoreModel.load(scores_file)
    scores = tmp_path / "scores.params.json"
    dataclasses.replace(model, thresholds={**model.thresholds, MIXED_SPREAD: 0.3}).save(scores)
    gait, app = identities(2, seed=11), appearances(2, seed=12)
    rng = np.random.default_rng(13)
    records = tmp_path / "run.jsonl"
    records.write_text("".join(json.dumps({
        "type": "track", "source": "clip.mp4", "track_id": 1, "final": i == 4, "time_s": {"start": 3.0 * i, "end": 3.0 * i + 2},
        "embeddings": {"gait": sample(gait[p], rng).tolist(), "appearance": app_sample(app[p], rng, 0.05).tolist()},
        "model_versions": {"gait": "gar@1", "reid": "reid@1"}}) + "\n" for i, p in enumerate([0, 0, 0, 1, 1])))
    gal = str(tmp_path / "g")
    base = ["--gallery", gal, "--jsonl", str(records), "--scores", str(scores)]
    assert enroll_main([*base, "--name", "last"]) == 0
    assert "since the person in the track's box changed" in capsys.readouterr().out
    assert enroll_main([*base, "--name", "whole", "--whole-track"]) == 0
    with Gallery(gal, create=False) as g:
        counts = {i.name: i.entries for i in g.identities()}
    assert counts["last"] == {"gait": 2, "appearance": 2} and counts["whole"] == {"gait": 5, "appearance": 5}
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(UserError, match="bad.json"):
        enroll_main([*base[:-1], str(tmp_path / "bad.json"), "--name", "x"])


def test_appearance_spread_compares_only_windows_that_share_no_frames():
    from stages.gallery.matching import appearance_spread

    a, b = appearances(2)
    assert appearance_spread([a], [(0.0, 4.0)]) == 0.0
    # two people, but their windows overlap in time: not evidence of a switch on its own
    assert appearance_spread([a, b], [(0.0, 4.0), (3.0, 7.0)]) == 0.0
    spread = appearance_spread([a, a, b], [(0.0, 4.0), (1.0, 5.0), (6.0, 9.0)])
    assert spread == pytest.approx(1.0 - float(a @ b), abs=1e-5)


def test_a_track_that_switched_people_is_identified_but_not_enrolled(tmp_path, scores_file):
    gait, app = identities(3), appearances(3)
    matcher = GalleryMatcher(gallery=str(tmp_path / "g"), scores=scores_file, reranker="none", source_centring=False,
                             auto_enrol=True, threshold=2.0, mixed_spread=0.3)
    rng = np.random.default_rng(5)

    def track(track_id: int, people: list[int]) -> list[TrackWindow]:
        return [window(sample(gait[p], rng), appearance=app_sample(app[p], rng, 0.05), track=track_id,
                       final=i == len(people) - 1, start=30 * i) for i, p in enumerate(people)]

    switched = matcher.process(track(1, [0, 0, 1, 1]))
    assert [w.identity.mixed for w in switched] == [False, False, True, True]
    assert not switched[-1].identity.enrolled and matcher.gallery.identities() == []
    single = matcher.process(track(2, [2, 2, 2, 2]))
    assert not single[-1].identity.mixed and single[-1].identity.enrolled
    assert len(matcher.gallery.identities()) == 1
    matcher.close()


def test_the_final_stretch_starts_after_the_last_window_that_showed_someone_else():
    from stages.gallery.matching import final_stretch_start

    a, b = appearances(2)
    mix = unit(a + b)
    # windows as the assembler makes them: every 1.2 s, the last 4.8 s; the first four start at the track's start
    spans = [(0.0, 1.2), (0.0, 2.4), (0.0, 3.6), (0.0, 4.8), (1.2, 6.0), (2.4, 7.2), (3.6, 8.4)]
    # the last window that shows person a ends at 2.4 s: only the window from 3.6 s has none of it
    assert final_stretch_start([a, a, mix, b, b, b, b], spans, max_spread=0.3) == 3.6
    assert final_stretch_start([a, mix, b, b, b, b, b], spans, max_spread=0.3) == 2.4
    assert final_stretch_start([a] * 7, spans, max_spread=0.3) is None
    # back to person a at the end: every earlier window overlaps the last, which stands alone
    assert final_stretch_start([a, b, b, b, b, b, a], spans, max_spread=0.3) == 3.6
    # a and b far apart, but the last window shows both and is near each: nothing to cut
    assert final_stretch_start([a, a, b, b, b, b, mix], spans, max_spread=0.3) is None


def test_a_track_that_switched_people_is_decided_on_the_person_it_ends_on(tmp_path, scores_file):
    gait, app = identities(2, seed=3), appearances(2, seed=4)
    matcher = GalleryMatcher(gallery=str(tmp_path / "g"), scores=scores_file, reranker="none", source_centring=False,
                             auto_enrol=True, threshold=2.0, mixed_spread=0.3)
    rng = np.random.default_rng(6)

    def track(track_id: int, people: list[int], source: str) -> list[TrackWindow]:
        return [window(sample(gait[p], rng), appearance=app_sample(app[p], rng, 0.05), track=track_id, source=source,
                       final=i == len(people) - 1, start=30 * i) for i, p in enumerate(people)]

    names = [matcher.process(track(1 + p, [p] * 4, f"cam{p}"))[-1].identity for p in (0, 1)]
    assert all(n.enrolled for n in names) and names[0].identity != names[1].identity
    switched = matcher.process(track(3, [0, 0, 0, 1, 1], "cam2"))
    assert [w.identity.identity for w in switched[:3]] == [names[0].identity] * 3
    # Pooled over all five windows the track looks more like the first person; it now shows the second.
    assert switched[-1].identity.mixed and switched[-1].identity.identity == names[1].identity
    assert not switched[-1].identity.enrolled
    matcher.close()


def test_enrolling_a_track_whose_person_changed_keeps_the_windows_since_the_change(tmp_path):
    from stages.gallery.operations import TrackEmbeddings, enroll_track

    gait, app = identities(2, seed=7), appearances(2, seed=8)
    rng = np.random.default_rng(9)
    people = [0, 0, 0, 1, 1]
    metas = [EntryMeta("x", "cam", 1, 3.0 * i, 3.0 * i + 0.2) for i in range(len(people))]
    switched = TrackEmbeddings("cam", 1, {
        "gait": [(sample(gait[p], rng), m, "gar@1") for p, m in zip(people, metas)],
        "appearance": [(app_sample(app[p], rng, 0.05), m, "reid@1") for p, m in zip(people, metas)]})
    steady = TrackEmbeddings("cam", 2, {m: items[:3] for m, items in switched.items.items()})
    with Gallery(tmp_path / "g") as g:
        assert enroll_track(g, switched, "ends-on-1", mixed_spread=0.3) == {"gait": 2, "appearance": 2}
        kept = [e.entry_id for e in g.entries() if e.identity == "ends-on-1" and e.modality == "appearance"]
        assert all(float(v @ app[1]) > 0.9 for v in g.features(kept).values())
        assert enroll_track(g, switched, "whole") == {"gait": 5, "appearance": 5}
        assert enroll_track(g, steady, "steady", mixed_spread=0.3) == {"gait": 3, "appearance": 3}


def test_auto_enrol_simulation_leaves_ambiguous_tracks_unnamed_and_fits_both_thresholds():
    from training.fusion import TrackPairs, fit_link_threshold, simulate_auto_enrol

    # tracks 0, 1: person a; 2: ambiguous against a (it is person b); 3: person b
    fused = np.array([[0, 3, 0.5, -3], [3, 0, 0.5, -3], [0.5, 0.5, 0, 3], [-3, -3, 3, 0]], float)
    order = np.arange(4)
    assert simulate_auto_enrol(fused, order, threshold=1.0, enrol_below=1.0) == [0, 0, 1, 1]
    assert simulate_auto_enrol(fused, order, threshold=1.0, enrol_below=0.0) == [0, 0, -1, 1]
    pairs = TrackPairs(["a", "a", "b", "b"], order, {}, np.zeros((4, 4), bool))
    fit = fit_link_threshold([fused], [pairs], merge_above=None)
    assert fit["enrol_below"] <= fit["threshold"] and fit["fit_sites"][0]["f1"] == 1.0


def test_the_replay_fit_takes_of_the_settings_tied_for_best_the_most_cautious_or_the_fewest_surplus_identities():
    from training.fusion import ReplayChoice, ReplayTrial

    def trial(f1: float, identities: int, threshold: float, consolidate: float | None) -> ReplayTrial:
        return ReplayTrial.of([{"f1": f1, "identities": identities, "truth": 12}], threshold, consolidate)

    trials = [trial(0.765, 16, 0.0, -1.0), trial(0.760, 14, 0.5, -1.0), trial(0.760, 14, 0.5, None),
              trial(0.758, 13, 1.0, -2.0), trial(0.70, 12, 2.0, None)]
    assert ReplayChoice().best(trials) == trials[2]  # within 0.005: higher linking, then no consolidation
    by_identities = ReplayChoice(tolerance=0.01, prefer="identities")
    assert by_identities.best(trials) == trials[3]  # within 0.01: fewest surplus identities (a clear loser never)
    equal_counts = [trial(0.761, 14, 0.0, -1.0), trial(0.760, 14, 0.5, -1.0), trial(0.760, 14, 0.5, None)]
    assert by_identities.best(equal_counts) == equal_counts[2]  # then the most cautious
    one_under, one_over = trial(0.80, 11, 0.0, -1.0), trial(0.80, 13, 0.5, None)
    assert by_identities.best([one_under, one_over]) == one_over  # one too few or too many alike: the more cautious
    for choice in (ReplayChoice(), by_identities):
        assert choice.best([trial(0.80, 16, 0.0, -1.0), trial(0.76, 12, 0.5, None)]).f1 == 0.80  # a clear best wins


def test_replay_choice_rejects_unknown_keys_and_preferences():
    from training.fusion import ReplayChoice

    assert ReplayChoice.from_dict({}) == ReplayChoice(0.005, "cautious")
    with pytest.raises(ValueError, match="unknown key"):
        ReplayChoice.from_dict({"tolerence": 0.01})
    with pytest.raises(ValueError, match="prefer one of"):
        ReplayChoice.from_dict({"prefer": "fewest"})


def _interleaved_site(n: int):
    """A site of ``n`` one-window tracks, two cameras' in turn, for replays whose link stats are stubbed."""
    from training.site_windows import SiteWindows

    return SiteWindows("s", np.array(["a", "b"] * (n // 2)), np.arange(n), np.zeros(n, int), np.ones(n, bool),
                       np.arange(n) - 1.0, np.arange(n, dtype=float), np.zeros(n, bool), np.zeros((n, 2, 2)),
                       np.zeros(n, bool), np.zeros((n, 3)), np.arange(n), np.zeros(n), np.ones(n), np.full(n, np.nan),
                       np.zeros(n, int), {"gait": "g"})


def test_the_replay_fit_decides_over_shifted_camera_clocks_and_records_the_emitted_orders_choice(monkeypatch):
    import training.fusion as fusion
    from evaluation.identity.runs import EnrolOrders

    site = _interleaved_site(6)
    replayed = []

    def replay(trial_site, fps, model, options, consolidate=(None,)):
        emitted = np.array_equal(trial_site.t_end, site.t_end)
        replayed.append(emitted)
        t = model.thresholds["link:k"]
        # the emitted order favours linking at 0.0; the other orders, and so the mean, favour 1.0
        f1 = {(True, 0.0): 0.8, (True, 1.0): 0.7, (False, 0.0): 0.6, (False, 1.0): 0.9}[(emitted, t)]
        return [{"f1": f1, "identities": 12, "truth": 12} for _ in consolidate]

    monkeypatch.setattr(fusion, "replay_auto_enrol", replay)
    model = ScoreModel(scores={}, fusions={}, thresholds={"link:k": 0.0}, target_far=0.01, models={})
    fit = fusion.fit_link_by_replay([(site, 25.0)], model, "k", {}, (0.0, 1.0), consolidate=(None,),
                                    orders=EnrolOrders(count=2, max_offset_s=10.0, seed=1))
    assert replayed.count(True) == 2 and replayed.count(False) == 4  # each threshold: emitted + two shifted orders
    assert fit["threshold"] == 1.0 and fit["orders"]["count"] == 2
    assert fit["emitted_order_choice"]["threshold"] == 0.0 and fit["fit_sites"] == [{"f1": 0.7, "identities": 12, "truth": 12}]


def test_the_replay_fit_chooses_the_fewest_frames_to_enrol_with_the_threshold_and_the_matcher_uses_it(
        monkeypatch, tmp_path, scores_file):
    import training.fusion as fusion
    from evaluation.identity.runs import EnrolOrders
    from stages.gallery.scoring import ENROL_FRAMES

    site = _interleaved_site(4)
    seen = []

    def replay(trial_site, fps, model, options, consolidate=(None,)):
        frames = options["min_enrol_frames"]
        seen.append((model.thresholds["link:k"], frames))
        # 40 frames links as well as 20 and leaves one identity per person; so does 60, and of the two
        # the fewer frames win; 80 links too little to be tied
        f1, identities = {20: (0.9, 14), 40: (0.9, 12), 60: (0.895, 12), 80: (0.7, 12)}[frames]
        return [{"f1": f1, "identities": identities, "truth": 12} for _ in consolidate]

    monkeypatch.setattr(fusion, "replay_auto_enrol", replay)
    model = ScoreModel(scores={}, fusions={}, thresholds={"link:k": 0.0}, target_far=0.01, models={})
    fit = fusion.fit_link_by_replay([(site, 25.0)], model, "k", {"min_enrol_frames": 5}, (0.0,), consolidate=(None,),
                                    orders=EnrolOrders(count=0), choice=fusion.ReplayChoice(0.01, "identities"),
                                    min_enrol_frames=(80, 60, 20, 40))
    assert sorted(seen) == [(0.0, 20), (0.0, 40), (0.0, 60), (0.0, 80)]
    assert fit["min_enrol_frames"] == 40 and fit["emitted_order_choice"]["min_enrol_frames"] == 40

    # the matcher takes the fitted value for its decision unless min_enrol_frames is configured
    fitted = ScoreModel.load(scores_file)
    key = ScoreModel.threshold_key("fused", "euc", "mean")  # the decision of a matcher without re-ranker
    fitted = dataclasses.replace(fitted, thresholds={**fitted.thresholds, f"{ENROL_FRAMES}:{key}": 40})
    fitted.save(tmp_path / "fitted.params.json")
    matcher = GalleryMatcher(gallery=str(tmp_path / "g"), scores=str(tmp_path / "fitted.params.json"), auto_enrol=True,
                             reranker="none")
    configured = GalleryMatcher(gallery=str(tmp_path / "g2"), scores=str(tmp_path / "fitted.params.json"),
                                auto_enrol=True, reranker="none", min_enrol_frames=10)
    unfitted = GalleryMatcher(gallery=str(tmp_path / "g3"), scores=scores_file, auto_enrol=True, reranker="none")
    try:
        scorer = matcher.scorer
        assert scorer.threshold_key() == key
        assert matcher.enrol_min_frames(scorer) == 40
        assert configured.enrol_min_frames(configured.scorer) == 10
        assert unfitted.enrol_min_frames(unfitted.scorer) == 20
    finally:
        for m in (matcher, configured, unfitted):
            m.close()


def test_the_fusion_fit_embeds_its_sites_with_the_recipes_pipeline_overrides(monkeypatch):
    """A fit for another gait model runs the fitting sites through that model, not the default one."""
    import training.fusion as fusion

    seen = {}

    class Stop(Exception):
        pass

    def versions(overrides=None):
        seen["versions"] = list(overrides or [])
        return {"gait": "g", "reid": "r"}

    def windows(site_config, cache_dir, expected_versions=None, overrides=None):
        seen["site"] = (Path(site_config).name, list(overrides or []), expected_versions)
        raise Stop

    monkeypatch.setattr(fusion, "embedding_versions", versions)
    monkeypatch.setattr(fusion, "site_windows", windows)
    with pytest.raises(Stop):
        fusion.fit({"sites": ["configs/synth/fusion_fit_a.yaml"], "overrides": ["gait.weights=weights/gar_front.pt"]}, "x")
    assert seen["versions"] == ["gait.weights=weights/gar_front.pt"]
    assert seen["site"] == ("fusion_fit_a.yaml", ["gait.weights=weights/gar_front.pt"], {"gait": "g", "reid": "r"})


def test_mixed_spread_is_fitted_on_single_person_tracks():
    from training.fusion import Track, fit_mixed_spread, spread_stats

    def track(spread: float, purity: float) -> Track:
        return Track("s", "cam", 0, ("s", 0), 0, {}, 4, 0.0, 1.0, purity=purity, spread=spread)

    tracks = [track(s, 1.0) for s in np.linspace(0.01, 0.1, 50)] + [track(0.5, 0.5), track(0.05, 0.4), track(0.0, 1.0)]
    fit = fit_mixed_spread(tracks, 0.98)
    assert 0.09 < fit["threshold"] <= 0.1 and fit["single_tracks"] == 50 and fit["single_flagged"] == 1
    assert fit["mixed_tracks"] == 2 and fit["mixed_flagged"] == 1
    assert spread_stats(tracks, 0.2)["single_flagged"] == 0


def test_a_track_keeps_its_identity_unless_another_is_clearly_better(tmp_path, scores_file):
    from stages.gallery.matching import CandidateScore

    def candidate(name: str, fused: float) -> CandidateScore:
        return CandidateScore(name, fused, {}, {}, -1, 0)

    matcher = GalleryMatcher(gallery=str(tmp_path / "g"), scores=scores_file, reranker="none", source_centring=False,
                             switch_margin=1.0)
    close, clear = [candidate("b", 3.5), candidate("a", 3.0)], [candidate("b", 4.5), candidate("a", 3.0)]
    assert matcher._kept("a", close, threshold=2.0).identity == "a"  # b better by 0.5 < 1.0: stay with a
    assert matcher._kept("a", clear, threshold=2.0) is None  # b better by 1.5: move
    assert matcher._kept("a", [candidate("b", 2.5), candidate("a", 1.8)], threshold=2.0) is None  # a fell below
    assert matcher._kept(None, close, threshold=2.0) is None and matcher._kept("b", close, threshold=2.0) is None
    matcher.close()
    eager = GalleryMatcher(gallery=str(tmp_path / "g"), scores=scores_file, reranker="none", source_centring=False,
                           switch_margin=0.0)
    assert eager._kept("a", close, threshold=2.0) is None
    eager.close()


def _two_people_on_two_cameras(group_tracks: tuple[tuple[str, int], ...] = ()):
    """Fitting-site windows of persons 0 and 1, one track of two windows each on cam1, then on cam2 10 s
    later; the tracks in ``group_tracks`` ((camera, person)) have group share 1, the rest none judged."""
    from training.site_windows import SiteWindows

    gait, app = identities(2), appearances(2)
    rng = np.random.default_rng(2)
    rows = [(camera, person, w) for camera in ("cam1", "cam2") for person in (0, 1) for w in range(2)]
    n = len(rows)
    return SiteWindows(
        site="s", camera=np.array([c for c, _, _ in rows]), track_id=np.array([p for _, p, _ in rows]),
        window_index=np.array([w for _, _, w in rows]), final=np.array([w == 1 for _, _, w in rows]),
        t_start=np.array([10.0 * (c == "cam2") + 2.0 * w for c, _, w in rows]),
        t_end=np.array([10.0 * (c == "cam2") + 2.0 * w + 1.5 for c, _, w in rows]),
        has_gait=np.ones(n, bool), gait=np.stack([sample(gait[p], rng) for _, p, _ in rows]),
        has_appearance=np.ones(n, bool), appearance=np.stack([app_sample(app[p], rng, 0.05) for _, p, _ in rows]),
        identity=np.array([p for _, p, _ in rows]), outfit=np.zeros(n, int), purity=np.ones(n, np.float32),
        group_share=np.array([1.0 if (c, p) in group_tracks else np.nan for c, p, _ in rows], np.float32),
        new_frames=np.array([38 if w == 0 else 13 for _, _, w in rows]), versions={"gait": "gar@1", "reid": "reid@1"})


def test_replayed_windows_count_the_frames_the_tracks_showed(tmp_path):
    from training.site_windows import (SiteWindows, count_new_frames, replayed_track_ends, track_windows,
                                       window_end_boxes)

    rng = np.random.default_rng(5)
    fps = 25.0
    windows = []
    for track, n_windows in ((1, 4), (2, 3)):
        seen = np.flatnonzero(rng.random(400) < 0.6)  # a detection that comes and goes
        seen = seen[seen < 30 * n_windows + 60] if track == 1 else seen[seen > 200]  # track 2 starts late
        for i in range(n_windows):
            upto = seen[seen < seen[0] + 30 * (i + 1)] if i < n_windows - 1 else seen
            indices = upto[-60:] if track == 1 else upto[-10:]  # overlapping windows; track 2 leaves gaps
            windows.append(window(None, track=track, final=i == n_windows - 1, start=0, frames=1))
            x = indices.astype(np.float32)
            boxes = np.stack([x, np.full_like(x, 10.0), x + 20.0, np.full_like(x, 70.0)], 1)
            windows[-1].sequence = SilhouetteSequence(
                np.zeros((len(indices), 64, 44), np.uint8), np.ones(len(indices), np.float32),
                boxes, indices.astype(np.int64), indices / fps, (240, 320))
    n = len(windows)
    site = SiteWindows("s", np.array(["cam1"] * n), np.array([w.track_id for w in windows]), np.zeros(n, int),
                       np.array([w.is_final for w in windows]), np.array([w.sequence.pts_s[0] for w in windows]),
                       np.array([w.sequence.pts_s[-1] for w in windows]), np.zeros(n, bool), np.zeros((n, 2, 2)),
                       np.zeros(n, bool), np.zeros((n, 3)), np.zeros(n, int), np.zeros(n), np.ones(n), np.full(n, np.nan),
                       count_new_frames(windows), {"gait": "g"}, *window_end_boxes(windows))
    counts, ends = [], []
    for ws in (windows, track_windows(site, fps)):
        by_track: dict[int, TrackEvidence] = {}
        for w in ws:
            by_track.setdefault(w.track_id, TrackEvidence()).add(w, {"gait": "gait", "appearance": "reid"})
        counts.append({t: (e.frames, e.t_start, e.t_end) for t, e in by_track.items()})
        ends.append({("cam1", t): e.ends() for t, e in by_track.items()})
    # the replayed windows have no boxes; the replay gives the gallery the end boxes the tracks had
    assert all(not e.first and not e.last for e in ends[1].values())
    assert replayed_track_ends(site) == ends[0] and all(len(e.first) == len(e.last) == 8 for e in ends[0].values())
    site.save(tmp_path / "w.npz")
    assert replayed_track_ends(SiteWindows.load(tmp_path / "w.npz")) == ends[0]  # kept by the cache
    dataclasses.replace(site, first_boxes=None, last_boxes=None).save(tmp_path / "old.npz")
    assert replayed_track_ends(SiteWindows.load(tmp_path / "old.npz")) == {}  # a cache from before: none
    distinct = {t: len({int(f) for w in windows if w.track_id == t for f in w.sequence.frame_indices}) for t in (1, 2)}
    assert {t: c[0] for t, c in counts[0].items()} == distinct  # each frame counted once, however windows overlap
    for track, (frames, t_start, t_end) in counts[0].items():  # the replay counts the same frames, over the same times
        assert counts[1][track][0] == frames and counts[1][track][1:] == pytest.approx((t_start, t_end))


def test_replaying_a_site_through_the_matcher_links_its_tracks(scores_file):
    from training.fusion import replay_auto_enrol
    from training.site_windows import track_windows

    site = _two_people_on_two_cameras()
    n = len(site.camera)
    windows = track_windows(site, fps=25.0)
    assert len(windows) == n and windows[1].is_final and windows[1].sequence.frame_indices[[0, -1]].tolist() == [50, 88]
    evidence = TrackEvidence()
    for w in windows[:2]:
        evidence.add(w, {"gait": "gait", "appearance": "reid"})
    assert evidence.frames == 38 + 13  # the frames the site's windows had, for the frames that start an identity
    model = ScoreModel.load(scores_file)
    linked, = replay_auto_enrol(site, 25.0, model, {"reranker": "none", "source_centring": False, "min_enrol_frames": 1,
                                                    "threshold": 2.0})
    assert linked["f1"] == 1.0 and linked["identities"] == 2
    # linking nothing, each track becomes an identity; consolidating afterwards joins each person's two
    apart, joined = replay_auto_enrol(site, 25.0, model, {"reranker": "none", "source_centring": False,
                                                          "min_enrol_frames": 1, "threshold": 1e6},
                                      consolidate=(None, 2.0))
    assert apart["identities"] == 4 and apart["recall"] == 0.0
    assert joined["identities"] == 2 and joined["f1"] == 1.0


def test_the_fits_replay_decides_as_the_gallery_does_group_tracks_and_second_looks(tmp_path, scores_file):
    from training.fusion import replay_auto_enrol, replay_options
    from training.site_windows import SiteWindows, track_windows

    # person 0's first track (cam1) is a box around a group in every frame judged; nothing else is judged
    _two_people_on_two_cameras(group_tracks=(("cam1", 0),)).save(tmp_path / "windows.npz")
    loaded = SiteWindows.load(tmp_path / "windows.npz")
    windows = track_windows(loaded, fps=25.0)
    assert [w.group_share for w in windows] == [1.0, 1.0, None, None, None, None, None, None]
    options = {**replay_options("none", None), "min_enrol_frames": 1, "threshold": 2.0}

    # The gallery itself: the group track finds no identity when it ends and is never enrolled; person
    # 0's cam2 track starts one, and at the end the group track is named after it on a second look.
    matcher = GalleryMatcher(gallery=str(tmp_path / "g"), scores=scores_file, auto_enrol=True, consolidate=False,
                             **options)
    matcher.process(windows)
    matcher.close()
    assert [(n.source, n.track_id) for n in matcher.named_late] == [("cam1", 0)]
    with Gallery(tmp_path / "g", create=False) as gallery:
        assert len(gallery.identities()) == 2
        assert {e.source for e in gallery.entries(matcher.named_late[0].identity)} == {"cam2"}

    # The fit's replay reads the same decisions: person 0's two tracks linked through the second look.
    replayed, = replay_auto_enrol(loaded, 25.0, ScoreModel.load(scores_file), options)
    assert replayed["f1"] == 1.0 and replayed["identities"] == 2 and replayed["unnamed"] == 0


def test_consolidation_merges_a_persons_identities_but_never_two_people_seen_together(tmp_path, scores_file):
    gait, app = identities(3), appearances(3)
    rng = np.random.default_rng(4)
    # linking nothing (every finished track is a new identity), consolidating at the end at 2.0
    matcher = GalleryMatcher(gallery=str(tmp_path / "g"), scores=scores_file, reranker="none", source_centring=False,
                             auto_enrol=True, threshold=1e6, enrol_below=1e6, min_enrol_frames=1, consolidate_above=2.0)

    def track(person: int, source: str, track_id: int, start: int) -> list[TrackWindow]:
        return [window(sample(gait[person], rng), appearance=app_sample(app[person], rng), track=track_id, source=source,
                       final=i == 1, start=start + 30 * i) for i in range(2)]

    names = {}
    for key, args in {"p0 cam1": (0, "cam1", 1, 0), "p0 cam2": (0, "cam2", 1, 200), "p1 cam1": (1, "cam1", 2, 400),
                      # person 2 and a look-alike on two tracks of one camera at the same moment
                      "p2 cam1": (2, "cam1", 3, 600), "twin cam1": (2, "cam1", 4, 610)}.items():
        names[key] = matcher.process(track(*args))[-1].identity.identity
    assert len(set(names.values())) == 5 and len(matcher.gallery.identities()) == 5
    matcher.close()
    merged = matcher.outcome()["merged"]
    assert [{m["kept"], m["absorbed"]} for m in merged] == [{names["p0 cam1"], names["p0 cam2"]}]
    assert merged[0]["kept"] == names["p0 cam1"] and merged[0]["entries"] == 4 and merged[0]["score"] > 2.0
    with Gallery(tmp_path / "g", create=False) as g:
        assert len(g.identities()) == 4 and len(g.entries(names["p0 cam1"])) == 8
        assert g.merges()[0]["absorbed"] == names["p0 cam2"] and "consolidated" in g.merges()[0]["evidence"]


def test_consolidate_every_merges_during_the_run_not_only_at_its_end(tmp_path, scores_file):
    gait, app = identities(2), appearances(2)
    rng = np.random.default_rng(5)
    # linking nothing, so that only consolidation joins a person's tracks; every 2 finished tracks
    matcher = GalleryMatcher(gallery=str(tmp_path / "g"), scores=scores_file, reranker="none", source_centring=False,
                             auto_enrol=True, threshold=1e6, enrol_below=1e6, min_enrol_frames=1,
                             consolidate_above=2.0, consolidate_every=2)

    def track(person: int, source: str, track_id: int, start: int) -> list[TrackWindow]:
        return [window(sample(gait[person], rng), appearance=app_sample(app[person], rng), track=track_id, source=source,
                       final=i == 1, start=start + 30 * i) for i in range(2)]

    first = matcher.process(track(0, "cam1", 1, 0))[-1].identity.identity
    assert matcher.consolidated == []  # one finished track: not yet
    second = matcher.process(track(0, "cam2", 1, 200))[-1].identity.identity
    assert [(m.kept, m.absorbed) for m in matcher.consolidated] == [(first, second)]  # before the run ends
    with Gallery(tmp_path / "g", create=False) as g:
        assert [s.name for s in g.identities()] == [first]
    matcher.process(track(1, "cam1", 2, 400))
    matcher.close()  # the last track is consolidated at the end; another person, nothing to merge
    assert len(matcher.outcome()["merged"]) == 1


def test_merged_names_follow_chains_of_merges():
    from pipeline.messages import merged_names

    merges = [{"kept": "b", "absorbed": "c"}, {"kept": "a", "absorbed": "b"}, {"kept": "x", "absorbed": "y"}]
    assert merged_names(merges) == {"c": "a", "b": "a", "y": "x"}
    assert merged_names([]) == {}


def test_cli_consolidate_merges_an_automatic_identity_into_the_named_one(tmp_path, capsys, scores_file):
    gait, app = identities(2), appearances(2)
    rng = np.random.default_rng(6)
    with Gallery(tmp_path / "g") as g:
        for name, person, source, auto in (("alice", 0, "cam1", False), ("alice", 0, "cam1", False),
                                           ("person-00001", 0, "cam2", True), ("person-00002", 1, "cam2", True)):
            meta = [EntryMeta(name, source, 5 if auto else 1, 0.0, 2.0)]
            g.add("gait", [sample(gait[person], rng)], meta, "gar@1", auto=auto)
            g.add("appearance", [app_sample(app[person], rng)], meta, "reid@1", auto=auto)
    args = ["--gallery", str(tmp_path / "g"), "--scores", scores_file, "--reranker", "none"]
    assert gallery_main(["consolidate", *args, "--above", "2.0", "--json"]) == 0
    merges = json.loads(capsys.readouterr().out)
    assert [(m["kept"], m["absorbed"], m["entries"]) for m in merges] == [("alice", "person-00001", 2)]
    assert gallery_main(["merges", "--gallery", str(tmp_path / "g"), "--json"]) == 0
    recorded = json.loads(capsys.readouterr().out)
    assert recorded[0]["absorbed"] == "person-00001" and recorded[0]["evidence"]["consolidated"] > 2.0
    with Gallery(tmp_path / "g", create=False) as g:
        assert sorted(i.name for i in g.identities()) == ["alice", "person-00002"]
    assert gallery_main(["consolidate", *args, "--above", "2.0"]) == 0  # nothing left to merge
    assert capsys.readouterr().out.strip().endswith("0 merge(s)")


def test_a_new_identity_never_takes_the_name_of_one_merged_away(tmp_path):
    rng = np.random.default_rng(8)
    gait = identities(4)
    with Gallery(tmp_path / "g") as g:
        names = [g.enrol_new_identity("person", {"gait": ([sample(p, rng)], [EntryMeta("")], "gar@1")})[0] for p in gait[:3]]
        assert names == ["person-00001", "person-00002", "person-00003"]
        g.merge_identities("person-00001", "person-00003")
        fresh, _ = g.enrol_new_identity("person", {"gait": ([sample(gait[3], rng)], [EntryMeta("")], "gar@1")})
        assert fresh == "person-00004"  # person-00003 lives on in person-00001; records may still name it


def test_a_consolidation_at_a_higher_threshold_is_a_prefix_of_one_at_a_lower_threshold():
    from training.fusion import merges_at_threshold

    merges = [{"kept": "a", "absorbed": "o", "evidence": {"track_id": 3}},  # online: always kept
              {"kept": "a", "absorbed": "b", "evidence": {"consolidated": 3.0}},
              {"kept": "c", "absorbed": "d", "evidence": {"consolidated": 0.5}},
              {"kept": "a", "absorbed": "e", "evidence": {"consolidated": 1.5}}]  # re-scored after a merge
    assert [m["absorbed"] for m in merges_at_threshold(merges, 1.0)] == ["o", "b"]  # stops at the first under 1.0
    assert [m["absorbed"] for m in merges_at_threshold(merges, 0.0)] == ["o", "b", "d", "e"]
    assert [m["absorbed"] for m in merges_at_threshold(merges, None)] == ["o"]


def test_together_share_is_the_overlap_of_two_tracks_of_one_camera_over_the_shorter():
    from stages.gallery.consolidation import Sighting, seen_together

    def together_share(a: list[Sighting], b: list[Sighting]) -> float | None:  # the largest, as consolidation reads it
        return max((share for _, _, share in seen_together(a, b)), default=None)

    first = [Sighting("cam1", 1, 0.0, 4.0)]
    assert together_share(first, [Sighting("cam1", 2, 3.0, 5.0)]) == pytest.approx(0.5)  # 1 s of the 2 s track
    assert together_share(first, [Sighting("cam1", 2, 1.0, 2.0)]) == pytest.approx(1.0)  # inside the other
    assert together_share(first, [Sighting("cam1", 2, 4.5, 6.0)]) is None  # one after the other
    assert together_share(first, [Sighting("cam2", 2, 1.0, 2.0), Sighting("cam1", 1, 1.0, 2.0)]) is None  # other camera, same track
    assert together_share(first, [Sighting("cam1", 2, 4.0, 4.0)]) == 1.0  # an instant inside: together


def test_a_track_handed_over_by_the_tracker_keeps_its_persons_identity(tmp_path, scores_file):
    gait, app = identities(2), appearances(2)
    rng = np.random.default_rng(9)

    def track(person: int, track_id: int, start: int) -> list[TrackWindow]:
        return [window(sample(gait[person], rng), appearance=app_sample(app[person], rng), track=track_id,
                       final=i == 1, start=start + 30 * i) for i in range(2)]

    names = {}
    for overlap in (0.3, 0.0):
        matcher = GalleryMatcher(gallery=str(tmp_path / f"g{overlap}"), scores=scores_file, reranker="none",
                                 source_centring=False, auto_enrol=True, threshold=2.0, enrol_below=2.0,
                                 min_enrol_frames=1, consolidate=False, handover_overlap=overlap)
        # person 0 on track 1 over 0.0-3.2 s, then on track 2 from 3.0 s: the tracker ran both for 0.2 s
        first = matcher.process(track(0, 1, 0))[-1].identity.identity
        second = matcher.process(track(0, 2, 30))[-1].identity.identity
        # person 1 beside person 0 the whole time: never person 0
        other = matcher.process(track(1, 3, 35))[-1].identity.identity
        names[overlap] = (first, second, other)
        matcher.close()
    first, second, other = names[0.3]
    assert first == second and other not in (None, first)
    first, second, _ = names[0.0]  # any overlap means two people: the handed-over track cannot be person 0
    assert second != first


def _one_person_on_two_overlapping_tracks(folder, scores_file) -> GalleryMatcher:
    """Linking nothing: person 0's two tracks of cam1 (0.2 s shared, as in a handover) become two identities."""
    gait, app = identities(1), appearances(1)
    rng = np.random.default_rng(10)
    matcher = GalleryMatcher(gallery=str(folder), scores=scores_file, reranker="none", source_centring=False,
                             auto_enrol=True, threshold=1e6, enrol_below=1e6, min_enrol_frames=1, consolidate=False)
    for track_id, start in ((1, 0), (2, 30)):
        matcher.process([window(sample(gait[0], rng), appearance=app_sample(app[0], rng), track=track_id,
                                final=i == 1, start=start + 30 * i) for i in range(2)])
    assert len(matcher.gallery.identities()) == 2
    return matcher


def test_consolidation_merges_across_a_handover_only_above_the_handover_bar(tmp_path, scores_file):
    from stages.gallery.consolidation import Consolidator

    matcher = _one_person_on_two_overlapping_tracks(tmp_path / "g", scores_file)
    scorer = matcher.scorer
    # any overlap means two people, whatever the score
    assert Consolidator(matcher.gallery, scorer, 2.0, handover_overlap=0.0, together_above=None).run() == []
    assert Consolidator(matcher.gallery, scorer, 2.0, handover_overlap=0.3, handover_above=1e6).run() == []
    merges = Consolidator(matcher.gallery, scorer, 2.0, handover_overlap=0.3, handover_above=3.0).run()
    assert len(merges) == 1 and merges[0].score > 3.0
    assert len(matcher.gallery.identities()) == 1
    matcher.close()


def test_the_matcher_consolidates_across_a_handover_at_its_handover_bar(tmp_path, scores_file):
    matcher = _one_person_on_two_overlapping_tracks(tmp_path / "g", scores_file)
    matcher.consolidate_above = 2.0
    names = {i.name for i in matcher.gallery.identities()}
    assert matcher.consolidate_identities(names) == []  # by default a handover needs the linking threshold (1e6)
    matcher.handover_above = 3.0
    merges = matcher.consolidate_identities(names)
    assert len(merges) == 1 and merges[0].score > 3.0 and len(matcher.gallery.identities()) == 1
    matcher.close()


def test_identities_seen_together_merge_only_on_overwhelming_evidence(tmp_path, scores_file):
    from stages.gallery.consolidation import Consolidator

    matcher = _one_person_on_two_overlapping_tracks(tmp_path / "g", scores_file)
    scorer = matcher.scorer
    # no handover allowance: the two tracks count as seen together
    assert Consolidator(matcher.gallery, scorer, 2.0, handover_overlap=0.0, together_above=1e6).run() == []
    merges = Consolidator(matcher.gallery, scorer, 2.0, handover_overlap=0.0, together_above=3.0).run()
    assert len(merges) == 1 and merges[0].score > 3.0
    assert len(matcher.gallery.identities()) == 1
    matcher.close()


def _moving_window(track: int, first: int, shift: float, embedding: np.ndarray | None, appearance: np.ndarray | None,
                   final: bool, frames: int = 30) -> TrackWindow:
    """A window of cam1 at 25 fps on frames ``first``.. of a person whose 20 x 60 box moves 1 px a frame
    from x = 0 at frame 0; the track's box is ``shift`` px to the right of it."""
    idx = np.arange(first, first + frames, dtype=np.int64)
    x = idx.astype(np.float32) + shift
    boxes = np.stack([x, np.full(frames, 40.0), x + 20.0, np.full(frames, 100.0)], 1).astype(np.float32)
    seq = SilhouetteSequence(silhouettes=np.zeros((frames, 64, 44), np.uint8), ratios=np.ones(frames, np.float32),
                             boxes=boxes, frame_indices=idx, pts_s=idx / 25.0, frame_size=(240, 320))
    w = TrackWindow("cam1", track, 0, final, seq, gait_embedding=embedding, appearance_embedding=appearance)
    w.model_versions.update({"gait": "gar@1", "reid": "reid@1"})
    return w


def _one_person_handed_over(folder, scores_file, shift: float) -> GalleryMatcher:
    """Linking nothing: person 0 on cam1's track 1 (frames 0-59), then on track 2 (frames 56-115, 4 frames
    shared, as in a handover) whose boxes are ``shift`` px to the right of the person's."""
    gait, app = identities(1), appearances(1)
    rng = np.random.default_rng(10)
    matcher = GalleryMatcher(gallery=str(folder), scores=scores_file, reranker="none", source_centring=False,
                             auto_enrol=True, threshold=1e6, enrol_below=1e6, min_enrol_frames=1, consolidate=False)
    for track_id, first, track_shift in ((1, 0, 0.0), (2, 56, shift)):
        matcher.process([_moving_window(track_id, first + 30 * i, track_shift, sample(gait[0], rng),
                                        app_sample(app[0], rng), final=i == 1) for i in range(2)])
    assert len(matcher.gallery.identities()) == 2
    return matcher


@pytest.mark.parametrize("shift, merged", [(0.0, True), (4.0, True), (60.0, False)])
def test_a_handover_in_place_is_consolidated_at_the_consolidation_threshold(tmp_path, scores_file, shift, merged):
    # the new track's boxes on the shared frames: the old one's (cover 1.0), 4 px off (0.8), beside them (0)
    matcher = _one_person_handed_over(tmp_path / "g", scores_file, shift)
    names = {i.name for i in matcher.gallery.identities()}
    matcher.consolidate_above = 2.0  # handovers elsewhere need the linking threshold, 1e6
    merges = matcher.consolidate_identities(names)
    assert len(merges) == int(merged) and len(matcher.gallery.identities()) == 2 - int(merged)
    matcher.close()


def test_without_a_handover_cover_a_handover_in_place_needs_the_handover_bar(tmp_path, scores_file):
    matcher = _one_person_handed_over(tmp_path / "g", scores_file, 0.0)
    names = {i.name for i in matcher.gallery.identities()}
    matcher.consolidate_above, matcher.handover_cover = 2.0, None
    assert matcher.consolidate_identities(names) == []
    matcher.close()


def test_a_handover_in_place_is_read_off_the_boxes_the_two_tracks_share():
    from stages.gallery.consolidation import Sighting, handed_over_in_place
    from stages.gallery.store import TrackEnds

    def box(t: float, x: float) -> tuple:
        return (t, x, 0.0, x + 10.0, 30.0)

    old = Sighting("cam1", 1, 0.0, 2.0, TrackEnds(last=tuple(box(t, 0.0) for t in (1.8, 1.9, 2.0))))
    here = Sighting("cam1", 2, 1.9, 4.0, TrackEnds(first=(box(1.9, 0.0), box(2.0, 2.0), box(2.1, 3.0))))
    assert handed_over_in_place(old, here, 0.75) and handed_over_in_place(here, old, 0.75)  # either order
    assert not handed_over_in_place(old, here, 0.9)  # at 2.0 s 0.8 of one box lies inside the other
    beside = Sighting("cam1", 3, 1.9, 4.0, TrackEnds(first=(box(1.9, 12.0), box(2.0, 12.0))))
    assert not handed_over_in_place(old, beside, 0.75)
    later = Sighting("cam1", 4, 2.05, 4.0, TrackEnds(first=(box(2.05, 0.0),)))
    assert not handed_over_in_place(old, later, 0.75)  # no frame shared
    assert not handed_over_in_place(old, Sighting("cam1", 5, 1.9, 4.0), 0.75)  # boxes not known


def test_track_ends_are_kept_per_track_and_removed_with_their_identity(tmp_path):
    from stages.gallery.store import TrackEnds

    proto = identities(1)[0]
    with Gallery(tmp_path / "g") as g:
        g.add("gait", [proto], [EntryMeta("a", "cam1", 1, 0.0, 2.0)], "gar@1")
        g.add("gait", [proto], [EntryMeta("b", "cam1", 2, 1.0, 3.0)], "gar@1")
        assert g.track_ends([("cam1", 1)]) == {}  # none recorded yet (the table does not exist)
        g.record_track_ends("cam1", 1, TrackEnds(first=((0.0, 1, 2, 3, 4),), last=((1.0, 1, 2, 3, 4),)))
        g.record_track_ends("cam1", 1, TrackEnds(first=((9.0, 9, 9, 9, 9),), last=((2.0, 5, 6, 7, 8),)))  # later
        g.record_track_ends("cam1", 2, TrackEnds(first=((1.0, 0, 0, 1, 1),), last=((3.0, 0, 0, 1, 1),)))
    with Gallery(tmp_path / "g", create=False) as g:
        ends = g.track_ends([("cam1", 1), ("cam1", 2), ("cam2", 1)])
        assert set(ends) == {("cam1", 1), ("cam1", 2)}
        assert ends[("cam1", 1)] == TrackEnds(first=((0.0, 1, 2, 3, 4),), last=((2.0, 5, 6, 7, 8),))  # first kept
        g.remove_identity("a")
        assert set(g.track_ends([("cam1", 1), ("cam1", 2)])) == {("cam1", 2)}


def test_track_evidence_keeps_the_boxes_of_its_first_and_last_frames():
    from stages.gallery.stage import TRACK_END_FRAMES

    evidence = TrackEvidence()
    for first in (0, 20, 40):  # overlapping windows: frames 0-69, each kept once
        evidence.add(_moving_window(1, first, 0.0, None, None, final=False), {"gait": "gait", "appearance": "reid"})
    blank = _moving_window(1, 70, 0.0, None, None, final=True)
    blank.sequence.boxes[:] = 0.0  # a replayed window without boxes adds none
    evidence.add(blank, {"gait": "gait", "appearance": "reid"})
    ends = evidence.ends()
    assert [round(row[0] * 25) for row in ends.first] == list(range(TRACK_END_FRAMES))
    assert [round(row[0] * 25) for row in ends.last] == list(range(70 - TRACK_END_FRAMES, 70))
    assert ends.last[-1][1:] == (69.0, 40.0, 89.0, 100.0)
    assert evidence.frames == 100


def test_track_pairs_conflict_only_beyond_a_handover():
    from training.fusion import Track, track_pairs

    def track(camera: str, start: float, end: float) -> Track:
        empty = {"gait": np.zeros((0, P, C), np.float32), "appearance": np.zeros((0, 8), np.float32)}
        return Track("s", camera, 0, ("s", 0), 0, empty, 1, start, end)

    # cam1: 0-4 s; handed over to 3.8-8 s (0.2 s shared); a second person 1-6 s; cam2 at the same time as all
    pairs = track_pairs([track("cam1", 0, 4), track("cam1", 3.8, 8), track("cam1", 1, 6), track("cam2", 0, 8)], {}, 10)
    assert pairs.conflict.tolist() == [[False, False, True, False], [False, False, True, False],
                                       [True, True, False, False], [False, False, False, False]]


def test_a_track_too_short_to_start_an_identity_is_named_on_a_second_look(tmp_path, scores_file):
    gait, app = identities(3), appearances(3)
    rng = np.random.default_rng(6)

    def track(person: int, source: str, track_id: int, start: int, windows: int, frames: int = 30) -> list[TrackWindow]:
        return [window(sample(gait[person], rng), appearance=app_sample(app[person], rng), track=track_id, source=source,
                       final=i == windows - 1, start=start + frames * i, frames=frames) for i in range(windows)]

    def run(second_look: bool, folder: str) -> tuple[GalleryMatcher, dict[str, str | None]]:
        matcher = GalleryMatcher(gallery=str(tmp_path / folder), scores=scores_file, reranker="none", source_centring=False,
                                 auto_enrol=True, threshold=2.0, min_enrol_frames=40, second_look=second_look)
        decided = {}
        # person 0 and person 2 are first seen on tracks too short to start an identity (an empty gallery)
        for key, args in {"p0 short": (0, "cam1", 1, 0, 1, 20), "p2 short": (2, "cam1", 2, 100, 1, 20),
                          "p0 long": (0, "cam2", 1, 300, 2), "p1 long": (1, "cam2", 2, 500, 2)}.items():
            decided[key] = matcher.process(track(*args))[-1].identity.identity
        matcher.close()
        return matcher, decided

    matcher, decided = run(True, "g")
    assert decided["p0 short"] is None and decided["p2 short"] is None  # as the tracks ended
    assert decided["p0 long"] is not None and decided["p1 long"] not in (None, decided["p0 long"])
    named = matcher.outcome()["named"]
    # person 0's short track joins the identity their later track started; person 2 was never enrolled
    assert [(n["source"], n["track_id"], n["identity"]) for n in named] == [("cam1", 1, decided["p0 long"])]
    assert named[0]["score"] > 2.0
    with Gallery(tmp_path / "g", create=False) as g:
        entries = g.entries(decided["p0 long"])
        assert len(entries) == 6 and {(e.source, e.track_id) for e in entries} == {("cam1", 1), ("cam2", 1)}

    without, decided = run(False, "g2")
    assert without.outcome()["named"] == [] and decided["p0 short"] is None


def test_shipped_score_fusions_match_their_manifests_and_the_models_their_recipes_name():
    """Every weights/score_fusion*.params.json is the file its manifest names, made by the recipe it names
    (resolved with _base_), from windows embedded by the models that recipe's overrides choose."""
    from pipeline.config import read_yaml
    from stages.checkpoints import sha256_of

    root = Path(__file__).resolve().parents[1]
    model_of_override = {"gait.weights": "gait", "reid.appearance.weights": "appearance"}
    manifests = [p for p in (root / "weights").glob("score_fusion*.json") if not p.name.endswith(".params.json")]
    assert len(manifests) >= 4
    for manifest_path in manifests:
        manifest = json.loads(manifest_path.read_text())
        assert sha256_of(manifest_path.with_name(manifest["file"])) == manifest["sha256"], manifest_path.name
        assert read_yaml(root / manifest["command"].split("--config ")[1]) == manifest["config"], manifest_path.name
        # the detector the fit ran (recorded since manifests name it; before, auto always ran the classic
        # one) is what the recipe pins, unless auto found a third-party model (named in the fit command)
        recorded = manifest.get("detector", "classic").split(" ")[0]
        overrides = manifest["config"].get("overrides", [])
        pinned = [o.split("=", 1)[1] for o in overrides if o.startswith("detect.backend=")]
        assert (pinned == [recorded]) if pinned else (recorded not in ("classic", "centre")), manifest_path.name
        for override in manifest["config"].get("overrides", []):
            key, value = override.split("=", 1)
            if not key.endswith("weights"):
                continue  # a setting of the front end (e.g. the tracker's), not a model file
            model = root / value
            assert model.is_file(), override
            if key in model_of_override:  # embedding models are recorded by name and hash; others in the config
                assert manifest["models"][model_of_override[key]] == f"{model.stem}@{sha256_of(model)[:12]}", override

