"""The one place that lists every backend of every stage kind.

Entries are ``module:Class`` strings, imported only when a configuration selects them. The order of
``STAGE_KINDS`` is the order in which the runner chains the stages.
"""

from __future__ import annotations

from pipeline.registry import Registry

DETECTORS = Registry(
    "detect",
    {
        "classic": "stages.detect.classic:ClassicDetector",
        "centre": "stages.detect.centre:CentreNetDetector",
        "yolo": "stages.detect.yolo:YoloDetector",
        "yolox": "stages.detect.yolox:YoloxDetector",
        "openvino": "stages.detect.openvino_ssd:OpenVinoSsdDetector",
    },
)
TRACKERS = Registry("track", {"bytetrack": "stages.track:ByteTrackStage", "botsort": "stages.track:BoTSORTStage"})
SEGMENTERS = Registry(
    "segment",
    {
        "detector": "stages.segment.detector:DetectorMasks",
        "foreground": "stages.segment.foreground:ForegroundSegmenter",
        "paddleseg": "stages.segment.paddleseg:PaddleSegSegmenter",
        "pose_crop": "stages.segment.pose_crop:PoseCropSegmenter",
        "pose_refine": "stages.segment.refine:RefinedPoseSegmenter",
    },
)
TRACKLETS = Registry("tracklets", {"window": "stages.tracklets:TrackletAssembler"})
GAIT_DETECTORS = Registry("gait_detector", {"gader": "stages.gait_detector.stage:GaitDetectorStage"})
GAIT_RECOGNIZERS = Registry("gait", {"gar": "stages.gait.recognizer:GaitRecognizer"})
REID = Registry("reid", {"appearance": "stages.reid.stage:AppearanceReID", "onnx": "stages.reid.onnx:OnnxReID"})
GALLERIES = Registry("gallery", {"faiss": "stages.gallery.stage:GalleryMatcher"})
ATTRIBUTES = Registry("attributes", {"clip_gar": "stages.attributes.stage:AttributeTagger"})

# ``backend: auto``: per stage kind, the function that picks and builds the best backend available,
# ``(section options) -> (backend name, built stage)``.
AUTO_BUILDERS = Registry(
    "auto",
    {
        "detect": "stages.detect:build_auto_detector",
        "segment": "stages.segment:build_auto_segmenter",
        "reid": "stages.reid:build_auto_reid",
    },
)

FRAME_STAGE_KINDS: dict[str, Registry] = {
    "detect": DETECTORS,
    "track": TRACKERS,
    "segment": SEGMENTERS,
}
TRACK_STAGE_KINDS: dict[str, Registry] = {
    "gait_detector": GAIT_DETECTORS,
    "gait": GAIT_RECOGNIZERS,
    "reid": REID,
    "gallery": GALLERIES,
    "attributes": ATTRIBUTES,
}
STAGE_KINDS: dict[str, Registry] = {**FRAME_STAGE_KINDS, "tracklets": TRACKLETS, **TRACK_STAGE_KINDS}
