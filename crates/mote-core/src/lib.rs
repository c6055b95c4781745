//! mote's graph IR: typed tensors, operators behind one [`Op`] trait, the float
//! reference interpreter, and graph passes.
//!
//! The importer (`mote-onnx`) builds a [`Graph`] whose nodes hold ops from [`ops`];
//! everything downstream (quantization, planning, code generation) works on this IR.

pub mod dtype;
pub mod error;
pub mod graph;
pub mod npz;
pub mod op;
pub mod ops;
pub mod passes;
pub mod quantize;
pub mod tensor;

pub use dtype::DType;
pub use error::{Error, Result};
pub use graph::{Graph, Node, NodeId, QuantParams, TensorId, Value};
pub use op::{InputFact, Op};
pub use tensor::{Tensor, TensorType};
