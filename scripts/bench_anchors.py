"""In-process anchors for scripts/bench.sh: what the same work costs in the
libraries people reach for, on the same image in the same run, so the
services' figures read as ratios that survive a noisy machine.

usage: bench_anchors.py PHOTO MODEL TENSOR_FILE OUT_JSON [ITERATIONS] [DETECT_ITERATIONS]

The work mirrors the services' defaults (see crates/imageflow-imaging):
- resize: 1920x1080 JPEG -> 800x450 (800x600 box, aspect kept) -> JPEG q85
  (resize-svc's GOOD: Catmull-Rom, q85, DCT-scaled decode when it fits).
  pyvips `thumbnail_buffer` (shrink-on-load, its fast path) and a full
  decode + `resize(kernel=cubic)`; OpenCV full decode + INTER_AREA (its
  anti-aliased shrink), and the reduced-resolution decodes
  IMREAD_REDUCED_COLOR_2 (960x540, then INTER_AREA) and _4 (480x270, then
  INTER_CUBIC up to 800x450: fewer pixels decoded than the output has, so a
  lower-fidelity floor, not a like-for-like anchor).
- filter: gaussian sigma 2 on the full 1920x1080 image, kernel 13x13
  (radius ceil(3 sigma)), edges replicated, JPEG q90.
- detect: onnxruntime `session.run` on the letterboxed 1x3x640x640 tensor
  that imageflowctl wrote with the service's own code (`imageflowctl tensor`).
Each anchor runs sequentially (one image at a time, the libraries' default
threading) after a warm-up; wall and process CPU time are taken per image.
"""

import json
import sys
import time

import cv2
import numpy as np
import onnxruntime
import pyvips

RESIZE_BOX = (800, 600)
RESIZE_Q = 85
FILTER_Q = 90
SIGMA = 2.0


def fit(width: int, height: int) -> tuple[int, int]:
    scale = min(RESIZE_BOX[0] / width, RESIZE_BOX[1] / height)
    return round(width * scale), round(height * scale)


def measure(fn, iterations: int, warmup: int = 3) -> dict:
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    started = time.perf_counter()
    for _ in range(iterations):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - w0) * 1000.0)
        cpu.append((time.process_time() - c0) * 1000.0)
    total = time.perf_counter() - started
    ordered = sorted(wall)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p / 100.0 * (len(ordered) - 1)))]

    return {
        "n": iterations,
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "mean_ms": sum(wall) / len(wall),
        "cpu_ms_per_image": sum(cpu) / len(cpu),
        "images_per_second": iterations / total,
        "latencies_ms": ordered,
    }


def main() -> None:
    photo, model, tensor_file, out = sys.argv[1:5]
    iterations = int(sys.argv[5]) if len(sys.argv) > 5 else 100
    detect_iterations = int(sys.argv[6]) if len(sys.argv) > 6 else 48
    data = open(photo, "rb").read()
    buffer = np.frombuffer(data, dtype=np.uint8)
    # Without this libvips answers a repeated operation from its cache.
    pyvips.cache_set_max(0)
    full = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    out_w, out_h = fit(full.shape[1], full.shape[0])
    jpeg_q = [cv2.IMWRITE_JPEG_QUALITY, RESIZE_Q]
    radius = int(np.ceil(3 * SIGMA))

    def vips_thumbnail() -> bytes:
        image = pyvips.Image.thumbnail_buffer(data, RESIZE_BOX[0], height=RESIZE_BOX[1])
        return image.jpegsave_buffer(Q=RESIZE_Q)

    def vips_full_cubic() -> bytes:
        image = pyvips.Image.new_from_buffer(data, "", access="sequential")
        return image.resize(out_w / image.width, kernel="cubic").jpegsave_buffer(Q=RESIZE_Q)

    def cv_full_area() -> bytes:
        image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
        small = cv2.resize(image, (out_w, out_h), interpolation=cv2.INTER_AREA)
        return cv2.imencode(".jpg", small, jpeg_q)[1]

    def cv_reduced(flag: int, interpolation: int):
        def run() -> bytes:
            image = cv2.imdecode(buffer, flag)
            small = cv2.resize(image, (out_w, out_h), interpolation=interpolation)
            return cv2.imencode(".jpg", small, jpeg_q)[1]

        return run

    def cv_gaussian() -> bytes:
        image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
        blurred = cv2.GaussianBlur(
            image, (2 * radius + 1, 2 * radius + 1), SIGMA, borderType=cv2.BORDER_REPLICATE
        )
        return cv2.imencode(".jpg", blurred, [cv2.IMWRITE_JPEG_QUALITY, FILTER_Q])[1]

    tensor = np.fromfile(tensor_file, dtype="<f4").reshape(1, 3, 640, 640)
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def ort_run():
        return session.run(None, {name: tensor})

    anchors = [
        ("resize", "pyvips thumbnail_buffer (shrink-on-load) + jpegsave", True, vips_thumbnail, iterations),
        ("resize", "pyvips full decode + resize(cubic) + jpegsave", True, vips_full_cubic, iterations),
        ("resize", "OpenCV imdecode + resize INTER_AREA + imencode", True, cv_full_area, iterations),
        (
            "resize",
            "OpenCV IMREAD_REDUCED_COLOR_2 (960x540) + INTER_AREA + imencode",
            True,
            cv_reduced(cv2.IMREAD_REDUCED_COLOR_2, cv2.INTER_AREA),
            iterations,
        ),
        (
            "resize",
            "OpenCV IMREAD_REDUCED_COLOR_4 (480x270) + INTER_CUBIC up + imencode",
            False,
            cv_reduced(cv2.IMREAD_REDUCED_COLOR_4, cv2.INTER_CUBIC),
            iterations,
        ),
        ("filter", "OpenCV imdecode + GaussianBlur 13x13 sigma 2 + imencode q90", True, cv_gaussian, iterations),
        ("detect", "onnxruntime session.run, 1x3x640x640 letterboxed tensor", True, ort_run, detect_iterations),
    ]
    results = []
    for group, description, comparable, fn, n in anchors:
        print(f"anchor: {description} ({n} runs)", file=sys.stderr)
        results.append(
            {"group": group, "name": description, "comparable": comparable, **measure(fn, n)}
        )
    report = {
        "output_size": [out_w, out_h],
        "versions": {
            "opencv": cv2.__version__,
            "opencv_threads": cv2.getNumThreads(),
            "pyvips": pyvips.__version__,
            "libvips": f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}",
            "libvips_concurrency": pyvips.vips_lib.vips_concurrency_get(),
            "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
        },
        "anchors": results,
    }
    with open(out, "w") as handle:
        json.dump(report, handle, indent=1)


if __name__ == "__main__":
    main()
