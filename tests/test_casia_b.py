"""CASIA-B readers: compact shared copy and OpenGait pickle layout."""

import pickle
from pathlib import Path

import numpy as np
import pytest

from training.casia_b import (
    GALLERY_TYPES,
    PROBE_TYPES,
    TEST_SUBJECTS,
    TRAIN_SUBJECTS,
    CasiaB,
    OpenGaitPickles,
    SequenceKey,
    load_numpy_pickle,
    unpack_sequence,
)

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "casia-b"


def test_protocol_constants():
    assert TRAIN_SUBJECTS[0] == "001" and TRAIN_SUBJECTS[-1] == "074" and len(TRAIN_SUBJECTS) == 74
    assert TEST_SUBJECTS[0] == "075" and TEST_SUBJECTS[-1] == "124" and len(TEST_SUBJECTS) == 50
    assert GALLERY_TYPES == ("nm-01", "nm-02", "nm-03", "nm-04")
    assert PROBE_TYPES["CL"] == ("cl-01", "cl-02")


def test_unpack_cuts_ten_columns_each_side():
    full = np.zeros((2, 64, 64), np.uint8)
    full[:, :, 9] = 1  # inside the cut margin: must vanish
    full[:, :, 10] = 1  # first kept column
    full[:, :, 54] = 1  # last kept column is 53: must vanish
    out = unpack_sequence(np.packbits(full, axis=-1))
    assert out.shape == (2, 64, 44) and out.dtype == np.uint8
    assert out[:, :, 0].min() == 255 and out[:, :, 1:].max() == 0


@pytest.mark.skipif(not DATA.is_dir(), reason=f"CASIA-B not present at {DATA}")
def test_compact_reader_matches_index_and_skips_short():
    reader = CasiaB(DATA)
    keys = reader.keys(subjects=["001"], types=["nm-01"])
    assert [k.view for k in keys] == [f"{v:03d}" for v in range(0, 181, 18)]
    seq = reader.load(keys[5])
    assert seq.silhouettes.shape == (reader.num_frames(keys[5]), 64, 44)
    assert set(np.unique(seq.silhouettes)) <= {0, 255}
    short = [SequenceKey.parse(n) for n, t in reader.frame_counts.items() if t < 5]
    assert short, "CASIA-B is known to hold a few sequences with fewer than 5 frames"
    long_only = CasiaB(DATA, min_frames=5).keys()
    assert not set(short) & set(long_only)


def _write_pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)


def test_opengait_layout_reader(tmp_path):
    seq = (np.random.default_rng(0).random((7, 64, 64)) > 0.5).astype(np.uint8) * 255
    _write_pickle(tmp_path / "003" / "bg-02" / "036" / "036.pkl", seq)
    reader = OpenGaitPickles(tmp_path)
    (key,) = reader.keys()
    assert key == SequenceKey("003", "bg-02", "036")
    out = reader.load(key)
    np.testing.assert_array_equal(out.silhouettes, seq[:, :, 10:54])


def test_opengait_reader_filters_by_subject_type_view_and_length(tmp_path):
    rng = np.random.default_rng(1)
    for subject, kind, view, frames in [("001", "nm-01", "000", 6), ("001", "bg-01", "090", 6),
                                        ("002", "nm-01", "090", 2), ("002", "nm-01", "000", 6)]:
        seq = (rng.random((frames, 64, 44)) > 0.5).astype(np.uint8) * 255
        _write_pickle(tmp_path / subject / kind / view / f"{view}.pkl", seq)
    reader = OpenGaitPickles(tmp_path, min_frames=3)
    assert reader.keys(types=["nm-01"]) == [SequenceKey("001", "nm-01", "000"), SequenceKey("002", "nm-01", "000")]
    assert reader.keys(subjects=["002"]) == [SequenceKey("002", "nm-01", "000")]  # 090 has 2 frames
    assert reader.keys(views=["090"]) == [SequenceKey("001", "bg-01", "090")]
    assert len(OpenGaitPickles(tmp_path).keys()) == 4


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_restricted_unpickler_refuses_other_objects(tmp_path):
    _write_pickle(tmp_path / "evil.pkl", _Evil())
    with pytest.raises(pickle.UnpicklingError, match="only numpy arrays"):
        load_numpy_pickle(tmp_path / "evil.pkl")
    _write_pickle(tmp_path / "ok.pkl", np.arange(6, dtype=np.uint8).reshape(1, 2, 3))
    assert load_numpy_pickle(tmp_path / "ok.pkl").shape == (1, 2, 3)
