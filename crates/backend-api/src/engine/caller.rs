//! The seam between scheduling and the network: the engine asks a
//! [`StepCaller`] to run one step call and never reaches the services itself,
//! so the DAG order and the step policy are tested with a fake caller.

use std::{future::Future, pin::Pin, time::Duration};

use imageflow_proto::v1::ImageData;

use crate::{
    clients::{self, CallError, CallResult, Services},
    registry::StepCall,
};

/// One call of a step on an image.
#[derive(Clone, Copy, Debug)]
pub struct CallRequest<'a> {
    pub call: &'a StepCall,
    pub input: &'a ImageData,
    pub execution_id: &'a str,
    /// The input of a several-input execution the call works on (`None` for
    /// a single-input one): the service keeps its outputs apart.
    pub input_index: Option<u32>,
    /// What is left of the attempt's deadline.
    pub timeout: Duration,
}

/// The future of one call.
pub type CallFuture<'a> = Pin<Box<dyn Future<Output = Result<CallResult, CallError>> + Send + 'a>>;

/// Runs one call. The engine bounds it by the attempt deadline and drops it
/// on cancel, so an implementation need not do either.
pub trait StepCaller: Send + Sync + std::fmt::Debug + 'static {
    fn call<'a>(&'a self, request: CallRequest<'a>) -> CallFuture<'a>;
}

/// The resident gRPC services.
impl StepCaller for Services {
    fn call<'a>(&'a self, r: CallRequest<'a>) -> CallFuture<'a> {
        Box::pin(clients::call(
            self,
            r.call,
            r.input,
            r.execution_id,
            r.input_index,
            r.timeout,
        ))
    }
}
