"""``run_pipeline.py train STAGE ...`` and ``eval STAGE ...``: the training and evaluation entry points
of the learned stages, ``training/<stage>.py`` and ``evaluation/<stage>.py``.

    python run_pipeline.py train gait --config configs/train/gar_casiab_cpu.yaml
    python run_pipeline.py eval gait evaluate --max-frames 10 --gei

are the same as ``python -m training.gait ...`` and ``python -m evaluation.gait ...``.
"""

from __future__ import annotations

import importlib
import sys

# stage -> what its training entry point trains
LEARNED_STAGES: dict[str, str] = {
    "gait": "GAR gait embedding (configs/train/gar_*.yaml)",
    "reid": "appearance ReID (configs/train/reid_*.yaml)",
    "gait_detector": "GADER gait detector (configs/train/gader.yaml)",
    "attributes": "CLIP-GAR attributes and their baseline (configs/train/clip_gar.yaml)",
    "rerank": "CarGait re-ranker on frozen gait features (configs/train/cargait.yaml)",
}


def run_entry_point(package: str, argv: list[str]) -> int:
    """Run ``<package>.<stage>.main(rest)`` for ``argv = [stage, *rest]``."""
    verb = "train" if package == "training" else "eval"
    if not argv or argv[0] in ("list", "-h", "--help"):
        print(f"usage: run_pipeline.py {verb} STAGE [ARGS]  (STAGE --help for its options)")
        for stage, what in LEARNED_STAGES.items():
            print(f"  {stage:<14} {what}")
        return 0
    stage = argv[0]
    if stage not in LEARNED_STAGES:
        print(f"error: unknown stage {stage!r}; choose one of: {', '.join(LEARNED_STAGES)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"{package}.{stage}")
    return int(module.main(argv[1:]) or 0)


def train_main(argv: list[str]) -> int:
    return run_entry_point("training", argv)


def eval_main(argv: list[str]) -> int:
    return run_entry_point("evaluation", argv)
