"""Bare onnxruntime on the same model and the same pre-processed tensor as
ai-detect-svc, for the benchmarks' comparison (run by benches/detect.rs on the
CPU and by benches/gpu.rs on the CUDA provider).

usage: ort_baseline.py MODEL TENSOR_FILE HEIGHT WIDTH REQUESTS CONCURRENCY [PROVIDER [BATCH]]
PROVIDER is cpu (the default) or cuda; BATCH (default 1) stacks the tensor
that many times into one input. Prints one JSON line: latencies in ms of each
`session.run`, the wall time, the version and the provider that ran.
"""

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def main() -> None:
    model, tensor_file, height, width, requests, concurrency = sys.argv[1:7]
    provider = PROVIDERS[sys.argv[7] if len(sys.argv) > 7 else "cpu"]
    batch = int(sys.argv[8]) if len(sys.argv) > 8 else 1
    height, width, requests, concurrency = int(height), int(width), int(requests), int(concurrency)
    tensor = np.fromfile(tensor_file, dtype="<f4").reshape(1, 3, height, width)
    tensor = np.ascontiguousarray(np.repeat(tensor, batch, axis=0))
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(model, options, providers=[provider])
    # onnxruntime falls back to the CPU quietly; a CPU figure under a CUDA
    # heading would be a lie.
    if session.get_providers()[0] != provider:
        sys.exit(f"asked for {provider}, got {session.get_providers()}")
    name = session.get_inputs()[0].name
    # The CUDA provider picks its convolution algorithms on the first runs of
    # each shape.
    for _ in range(5):
        session.run(None, {name: tensor})

    def one(_: int) -> float:
        started = time.perf_counter()
        session.run(None, {name: tensor})
        return (time.perf_counter() - started) * 1000.0

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        latencies = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - started
    print(
        json.dumps(
            {
                "latencies_ms": latencies,
                "wall_s": wall,
                "onnxruntime": onnxruntime.__version__,
                "provider": provider,
                "batch": batch,
            }
        )
    )


if __name__ == "__main__":
    main()
