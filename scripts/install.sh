#!/usr/bin/env bash
# Install gaitscope into ./.venv from the package registry (CPU FAISS; pass --gpu for faiss-gpu).
# --with-rtsp-server also installs Debian's GStreamer RTSP server used by the stream tests.
# --full adds the optional backends: PaddleSeg's runtime, the sentence encoder for attribute training,
# onnxruntime and OpenVINO for the learned detectors on exported models, Ray (the distributed executor),
# and Debian's Chromium for the report's rendering test.
# --no-models skips putting MediaPipe's BlazePose files into the models directory ($GAITSCOPE_MODELS,
# default ~/.cache/gaitscope/models), which the default segmenter uses when they are there.
# --yolox also downloads YOLOX-Nano's ONNX export from its publisher's GitHub release into the models
# directory (needs access to github.com); the default config's detector then uses it.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="cpu,dev,litert"
fetch_models=1
fetch_yolox=0
for arg in "$@"; do
  case "$arg" in
    --gpu) extras="${extras/cpu/gpu}" ;;
    --full)
      extras="$extras,paddle,text,onnx,openvino,ray"
      if command -v apt-get >/dev/null && ! command -v chromium >/dev/null; then
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } >/dev/null \
          || echo "chromium not installed: the report's screenshot test will skip" >&2
      fi ;;
    --no-models) fetch_models=0 ;;
    --yolox) fetch_yolox=1 ;;
    --with-rtsp-server)
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp \
        gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad \
        gstreamer1.0-libav >/dev/null ;;
    *) echo "unknown option: $arg" >&2; exit 2 ;;
  esac
done
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -c constraints.txt -e ".[$extras]"
if [ "$fetch_models" = 1 ]; then
  # From the mediapipe wheel on PyPI (read, never installed); offline the segmenter falls back and says so.
  .venv/bin/python scripts/fetch_mediapipe_models.py || echo "continuing without the BlazePose segmenter" >&2
fi
if [ "$fetch_yolox" = 1 ]; then
  .venv/bin/python scripts/fetch_yolox.py || echo "continuing without YOLOX-Nano: the classic detector runs" >&2
fi
echo "installed into $(pwd)/.venv"
