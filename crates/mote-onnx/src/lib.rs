//! ONNX import for mote. Decodes the protobuf (bindings generated once by
//! `tools/onnx-proto-gen` and checked in), translates each node into a mote op,
//! and folds exporter shape arithmetic into constants. Knows nothing of kernels.

pub mod attention;
mod ctx;
mod import;
pub mod proto;
pub mod qdq;
mod tensor;
pub mod translate;

pub use ctx::NodeCtx;
pub use import::{import, load, ImportOptions, OPSETS};
pub use tensor::{dtype_from_onnx, tensor_from_proto};
