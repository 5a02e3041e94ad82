//! Inference on a Triton server (or any KServe v2 gRPC server, e.g. MLServer):
//! the same pre-processed tensor as the in-process backend, sent as raw
//! little-endian FP32 bytes in `ModelInfer`.

use std::time::Duration;

use imageflow_proto::inference::{
    ModelInferRequest, ModelMetadataRequest, ModelReadyRequest, ServerReadyRequest,
    grpc_inference_service_client::GrpcInferenceServiceClient,
    model_infer_request::{InferInputTensor, InferRequestedOutputTensor},
};
use tonic::transport::{Channel, Endpoint};

use crate::{catalog::ModelSpec, onnx::RawOutput};

/// A connection to one inference server, shared by all models.
#[derive(Clone, Debug)]
pub struct TritonClient {
    client: GrpcInferenceServiceClient<Channel>,
    url: String,
}

/// Why a call to the server failed; UNAVAILABLE to our callers.
#[derive(Debug, thiserror::Error)]
pub enum TritonError {
    #[error("inference server {url}: {status}")]
    Call { url: String, status: tonic::Status },
    #[error("inference server {url}: {message}")]
    Protocol { url: String, message: String },
}

impl TritonClient {
    /// Connects lazily: the server may come up after us (health waits for it).
    pub fn new(url: &str, max_message_bytes: usize) -> Result<Self, String> {
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| format!("TRITON_URL: {url:?}: {e}"))?;
        let endpoint = imageflow_proto::transport::tuned(endpoint)
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let client = GrpcInferenceServiceClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        Ok(Self {
            client,
            url: url.to_string(),
        })
    }

    fn call_error(&self, status: tonic::Status) -> TritonError {
        TritonError::Call {
            url: self.url.clone(),
            status,
        }
    }

    fn protocol(&self, message: String) -> TritonError {
        TritonError::Protocol {
            url: self.url.clone(),
            message,
        }
    }

    /// Whether the server is ready and serves `spec` with the expected input
    /// and output tensors.
    pub async fn check_model(&self, spec: &ModelSpec) -> Result<(), TritonError> {
        let mut client = self.client.clone();
        let ready = client
            .server_ready(ServerReadyRequest {})
            .await
            .map_err(|s| self.call_error(s))?
            .into_inner()
            .ready;
        if !ready {
            return Err(self.protocol("server not ready".into()));
        }
        let ready = client
            .model_ready(ModelReadyRequest {
                name: spec.name.clone(),
                version: String::new(),
            })
            .await
            .map_err(|s| self.call_error(s))?
            .into_inner()
            .ready;
        if !ready {
            return Err(self.protocol(format!("model {} not ready", spec.name)));
        }
        let metadata = client
            .model_metadata(ModelMetadataRequest {
                name: spec.name.clone(),
                version: String::new(),
            })
            .await
            .map_err(|s| self.call_error(s))?
            .into_inner();
        let has =
            |list: &[imageflow_proto::inference::model_metadata_response::TensorMetadata],
             name: &str| list.iter().any(|t| t.name == name && t.datatype == "FP32");
        if !has(&metadata.inputs, &spec.input_name) || !has(&metadata.outputs, &spec.output_name) {
            return Err(self.protocol(format!(
                "model {} does not declare FP32 input {:?} and output {:?} (inputs {:?}, outputs {:?})",
                spec.name,
                spec.input_name,
                spec.output_name,
                metadata.inputs.iter().map(|t| &t.name).collect::<Vec<_>>(),
                metadata.outputs.iter().map(|t| &t.name).collect::<Vec<_>>()
            )));
        }
        Ok(())
    }

    /// Waits until [`Self::check_model`] passes, retrying with a capped backoff.
    pub async fn wait_ready(&self, spec: &ModelSpec) {
        let checked = imageflow_retry::retry(
            "inference server readiness check (NOT_SERVING)",
            imageflow_service::server::READINESS_BACKOFF,
            imageflow_retry::Limit::FOREVER,
            |_| true,
            || self.check_model(spec),
        )
        .await;
        match checked {
            Ok(()) => tracing::info!(url = %self.url, model = %spec.name, "inference server ready"),
            Err(err) => tracing::error!(error = %err, "gave up waiting for the inference server"),
        }
    }

    /// Runs a `[batch, 3, height, width]` input on the server.
    pub async fn infer(
        &self,
        spec: &ModelSpec,
        input: &[f32],
        batch: usize,
        timeout: Duration,
    ) -> Result<RawOutput, TritonError> {
        let mut raw = Vec::with_capacity(input.len() * 4);
        for v in input {
            raw.extend_from_slice(&v.to_le_bytes());
        }
        let mut request = tonic::Request::new(ModelInferRequest {
            model_name: spec.name.clone(),
            inputs: vec![InferInputTensor {
                name: spec.input_name.clone(),
                datatype: "FP32".into(),
                shape: vec![
                    batch as i64,
                    3,
                    i64::from(spec.input_height),
                    i64::from(spec.input_width),
                ],
                ..Default::default()
            }],
            outputs: vec![InferRequestedOutputTensor {
                name: spec.output_name.clone(),
                ..Default::default()
            }],
            raw_input_contents: vec![raw],
            ..Default::default()
        });
        request.set_timeout(timeout);
        let response = self
            .client
            .clone()
            .model_infer(request)
            .await
            .map_err(|s| self.call_error(s))?
            .into_inner();
        let index = response
            .outputs
            .iter()
            .position(|o| o.name == spec.output_name)
            .ok_or_else(|| {
                self.protocol(format!("no output {:?} in the answer", spec.output_name))
            })?;
        let output = &response.outputs[index];
        if output.datatype != "FP32" {
            return Err(self.protocol(format!("output is {}, expected FP32", output.datatype)));
        }
        let data = match response.raw_output_contents.get(index) {
            Some(bytes) if !bytes.is_empty() => {
                if bytes.len() % 4 != 0 {
                    return Err(
                        self.protocol("raw output is not a whole number of FP32 values".into())
                    );
                }
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            }
            _ => output
                .contents
                .as_ref()
                .map(|c| c.fp32_contents.clone())
                .unwrap_or_default(),
        };
        Ok(RawOutput::new(data, output.shape.clone()))
    }
}
