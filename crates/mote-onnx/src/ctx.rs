//! What a translator sees of one ONNX node: attributes, input facts, opset.
use crate::proto::{attribute_proto::AttributeType, AttributeProto, NodeProto};
use crate::tensor::tensor_from_proto;
use mote_core::{bail, InputFact, Result, Tensor, TensorType};

/// One ONNX node being translated, with everything known about its inputs.
pub struct NodeCtx<'a> {
    /// The node as stored in the file.
    pub node: &'a NodeProto,
    /// Opset version of the node's domain.
    pub opset: i64,
    /// One entry per `node.input`; `None` for an omitted optional input (empty name).
    pub inputs: Vec<Option<InputFact<'a>>>,
}

impl<'a> NodeCtx<'a> {
    fn attr(&self, name: &str) -> Option<&'a AttributeProto> {
        self.node.attribute.iter().find(|a| a.name() == name)
    }

    /// Integer attribute (also accepts a 1-element float or tensor attribute holding an integer).
    pub fn attr_i(&self, name: &str) -> Result<Option<i64>> {
        let Some(a) = self.attr(name) else { return Ok(None) };
        Ok(Some(match a.r#type() {
            AttributeType::Int => a.i(),
            AttributeType::Float => a.f().round() as i64,
            AttributeType::Tensor => {
                let t = self.attr_tensor(name)?.expect("present");
                match t.to_f64_vec().as_slice() {
                    [v] => v.round() as i64,
                    _ => bail!("attribute `{name}` must hold one number"),
                }
            }
            other => bail!("attribute `{name}` has type {other:?}, expected an integer"),
        }))
    }

    /// Float attribute (also accepts an integer or a 1-element tensor attribute).
    pub fn attr_f(&self, name: &str) -> Result<Option<f32>> {
        let Some(a) = self.attr(name) else { return Ok(None) };
        Ok(Some(match a.r#type() {
            AttributeType::Float => a.f(),
            AttributeType::Int => a.i() as f32,
            AttributeType::Tensor => {
                let t = self.attr_tensor(name)?.expect("present");
                match t.to_f64_vec().as_slice() {
                    [v] => *v as f32,
                    _ => bail!("attribute `{name}` must hold one number"),
                }
            }
            other => bail!("attribute `{name}` has type {other:?}, expected a float"),
        }))
    }

    /// Integer-list attribute.
    pub fn attr_ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        let Some(a) = self.attr(name) else { return Ok(None) };
        match a.r#type() {
            AttributeType::Ints => Ok(Some(a.ints.clone())),
            AttributeType::Int => Ok(Some(vec![a.i()])),
            other => bail!("attribute `{name}` has type {other:?}, expected a list of integers"),
        }
    }

    /// Float-list attribute.
    pub fn attr_floats(&self, name: &str) -> Result<Option<Vec<f32>>> {
        let Some(a) = self.attr(name) else { return Ok(None) };
        match a.r#type() {
            AttributeType::Floats => Ok(Some(a.floats.clone())),
            AttributeType::Float => Ok(Some(vec![a.f()])),
            other => bail!("attribute `{name}` has type {other:?}, expected a list of floats"),
        }
    }

    /// String attribute.
    pub fn attr_s(&self, name: &str) -> Result<Option<String>> {
        let Some(a) = self.attr(name) else { return Ok(None) };
        match a.r#type() {
            AttributeType::String => Ok(Some(String::from_utf8_lossy(a.s()).into_owned())),
            other => bail!("attribute `{name}` has type {other:?}, expected a string"),
        }
    }

    /// Tensor attribute, decoded.
    pub fn attr_tensor(&self, name: &str) -> Result<Option<Tensor>> {
        let Some(a) = self.attr(name) else { return Ok(None) };
        match (&a.t, a.r#type()) {
            (Some(t), AttributeType::Tensor) => Ok(Some(tensor_from_proto(t)?)),
            (_, other) => bail!("attribute `{name}` has type {other:?}, expected a tensor"),
        }
    }

    /// Number of inputs the node lists (including omitted optional ones).
    pub fn n_inputs(&self) -> usize {
        self.inputs.len()
    }

    /// Input `k`, which must be present.
    pub fn input(&self, k: usize) -> Result<InputFact<'a>> {
        match self.inputs.get(k).copied().flatten() {
            Some(f) => Ok(f),
            None => bail!("input #{k} is required but missing"),
        }
    }

    /// Type of input `k`, which must be present.
    pub fn input_ty(&self, k: usize) -> Result<&'a TensorType> {
        Ok(self.input(k)?.ty)
    }

    /// The value of input `k` if it is present; it must then be a constant
    /// (after folding), because mote bakes it into the op.
    pub fn const_input(&self, k: usize) -> Result<Option<&'a Tensor>> {
        match self.inputs.get(k).copied().flatten() {
            None => Ok(None),
            Some(f) => match f.value {
                Some(v) => Ok(Some(v)),
                None => bail!(
                    "input #{k} (`{}`) must be a constant (mote needs static shapes and parameters), \
                     but it is computed at run time",
                    self.node.input[k]
                ),
            },
        }
    }

    /// Like [`NodeCtx::const_input`], as a list of integers.
    pub fn const_ints(&self, k: usize) -> Result<Option<Vec<i64>>> {
        Ok(self.const_input(k)?.map(|t| t.to_i64_vec()))
    }
}
