"""An MLServer runtime that serves a YOLO ONNX model through onnxruntime.

The Triton backend of ai-detect-svc is tested against a real KServe v2 gRPC
server: MLServer (PyPI) with this runtime, serving the same model file the
in-process backend uses. The model's path is `parameters.uri` in its
model-settings.json.
"""

import numpy as np
import onnxruntime
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxYolo(MLModel):
    async def load(self) -> bool:
        self._session = onnxruntime.InferenceSession(
            self.settings.parameters.uri, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        self._output = self._session.get_outputs()[0].name
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        images = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        (boxes,) = self._session.run([self._output], {self._input: images})
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output(self._output, boxes)],
        )
