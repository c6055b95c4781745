//! The one trait every operator implements.
use crate::{Result, Tensor, TensorType};
use std::any::Any;
use std::fmt::Debug;

/// What is known about one input while inferring types: its type and, when the
/// input is a constant, its value.
#[derive(Clone, Copy, Debug)]
pub struct InputFact<'a> {
    /// Element type and shape.
    pub ty: &'a TensorType,
    /// The value, when the input is a constant.
    pub value: Option<&'a Tensor>,
}

/// An operator of the IR. Ops are small immutable values; everything an op needs
/// beyond its data inputs (axes, perms, shapes) is a field fixed at import.
pub trait Op: Debug + Send + Sync + OpClone {
    /// Op type name as users know it from ONNX (e.g. `MatMul`, `RequantShift`).
    fn name(&self) -> &'static str;

    /// Output types from input types. Must reject every input it cannot evaluate,
    /// so that a graph that type-checks never fails in [`Op::eval`] on shapes.
    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>>;

    /// Evaluates the op: the float reference (f32) or exact integer semantics.
    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>>;

    /// Multiply-accumulate count of one evaluation (0 for data movement).
    fn macs(&self, _inputs: &[&TensorType], _outputs: &[&TensorType]) -> u64 {
        0
    }

    /// For passes that look for particular ops.
    fn as_any(&self) -> &dyn Any;
}

/// Object-safe cloning of boxed ops.
pub trait OpClone {
    /// Clones the op into a new box.
    fn clone_box(&self) -> Box<dyn Op>;
}

impl<T: Op + Clone + 'static> OpClone for T {
    fn clone_box(&self) -> Box<dyn Op> {
        Box::new(self.clone())
    }
}

impl Clone for Box<dyn Op> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

/// Implements [`Op::name`] and [`Op::as_any`] for an op type.
#[macro_export]
macro_rules! op_common {
    ($name:expr) => {
        fn name(&self) -> &'static str {
            $name
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    };
}
