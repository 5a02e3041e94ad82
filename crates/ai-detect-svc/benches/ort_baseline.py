"""Bare onnxruntime on the same model and the same pre-processed tensor as
ai-detect-svc, for the benchmark's comparison (run by benches/detect.rs).

usage: ort_baseline.py MODEL TENSOR_FILE HEIGHT WIDTH REQUESTS CONCURRENCY
Prints one JSON line: latencies in ms of each `session.run` (batch 1).
"""

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime


def main() -> None:
    model, tensor_file, height, width, requests, concurrency = sys.argv[1:7]
    height, width, requests, concurrency = int(height), int(width), int(requests), int(concurrency)
    tensor = np.fromfile(tensor_file, dtype="<f4").reshape(1, 3, height, width)
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for _ in range(3):
        session.run(None, {name: tensor})

    def one(_: int) -> float:
        started = time.perf_counter()
        session.run(None, {name: tensor})
        return (time.perf_counter() - started) * 1000.0

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        latencies = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - started
    print(json.dumps({"latencies_ms": latencies, "wall_s": wall, "onnxruntime": onnxruntime.__version__}))


if __name__ == "__main__":
    main()
