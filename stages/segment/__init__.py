"""Segmentation stage: a full-frame boolean mask for every tracked person.

Backends: ``detector`` (the detector's own masks, e.g. YOLO-seg or the classic detector, with a
fallback for detections that have none), ``foreground`` (background subtraction inside each box,
for detectors without masks on static cameras) and ``paddleseg`` (a PP-HumanSeg / PP-LiteSeg
exported inference model run on each person crop). After this stage ``detections.mask`` is
(N, H, W) bool and False outside each detection's box.
"""
