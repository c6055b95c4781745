//! The graph: values (tensors) and nodes in topological order, plus the interpreter.
use crate::op::InputFact;
use crate::{bail, Error, Op, Result, Tensor, TensorType};
use std::collections::HashMap;
use std::sync::Arc;

/// Index of a value in [`Graph::values`].
pub type TensorId = usize;
/// Index of a node in [`Graph::nodes`].
pub type NodeId = usize;

/// A tensor of the graph: a graph input, a constant (weight) or a node output.
#[derive(Clone, Debug)]
pub struct Value {
    /// Name as in the model.
    pub name: String,
    /// Element type and static shape.
    pub ty: TensorType,
    /// The data, for constants (initializers and folded subgraphs).
    pub konst: Option<Arc<Tensor>>,
    /// How integer data maps to real values, once the tensor is quantized.
    pub quant: Option<QuantParams>,
}

/// Affine quantization of a tensor: `real = scale · (q − zero_point)`, per tensor
/// (one entry) or per channel along `axis`.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantParams {
    /// Scale per tensor or per channel.
    pub scale: Vec<f32>,
    /// Zero point per tensor or per channel (0 for symmetric).
    pub zero_point: Vec<i32>,
    /// The channel axis when there is more than one scale.
    pub axis: Option<usize>,
}

/// One operator application.
#[derive(Clone, Debug)]
pub struct Node {
    /// Name as in the model (made unique by the importer when missing).
    pub name: String,
    /// The operator.
    pub op: Box<dyn Op>,
    /// Data inputs.
    pub inputs: Vec<TensorId>,
    /// Outputs, in the order the op produces them.
    pub outputs: Vec<TensorId>,
}

/// A dataflow graph with static shapes, nodes in topological order.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// All tensors.
    pub values: Vec<Value>,
    /// Nodes in an order where every input is produced before use.
    pub nodes: Vec<Node>,
    /// Graph inputs fed by the user, in model order.
    pub inputs: Vec<TensorId>,
    /// Graph outputs, in model order.
    pub outputs: Vec<TensorId>,
}

impl Graph {
    /// Adds a value and returns its id.
    pub fn add_value(&mut self, name: impl Into<String>, ty: TensorType, konst: Option<Arc<Tensor>>) -> TensorId {
        self.values.push(Value { name: name.into(), ty, konst, quant: None });
        self.values.len() - 1
    }

    /// Adds a constant value.
    pub fn add_const(&mut self, name: impl Into<String>, t: Tensor) -> TensorId {
        let ty = t.ty();
        self.add_value(name, ty, Some(Arc::new(t)))
    }

    /// Infers the op's output types, then appends the node with fresh output values
    /// named `output_names` (the op must produce at least that many outputs).
    pub fn add_node(
        &mut self,
        name: impl Into<String>,
        op: Box<dyn Op>,
        inputs: Vec<TensorId>,
        output_names: &[String],
    ) -> Result<Vec<TensorId>> {
        let name = name.into();
        let tys = self.infer_node(&name, op.as_ref(), &inputs)?;
        if tys.len() < output_names.len() {
            return Err(Error::Unsupported(format!(
                "mote computes {} output(s) of this op, the model uses {}",
                tys.len(),
                output_names.len()
            ))
            .at_node(&name, op.name()));
        }
        let outputs: Vec<TensorId> =
            output_names.iter().zip(tys).map(|(n, ty)| self.add_value(n.clone(), ty, None)).collect();
        self.nodes.push(Node { name, op, inputs, outputs: outputs.clone() });
        Ok(outputs)
    }

    /// Runs type inference of `op` on the given inputs, checking every output size.
    pub fn infer_node(&self, name: &str, op: &dyn Op, inputs: &[TensorId]) -> Result<Vec<TensorType>> {
        let facts: Vec<InputFact> = inputs
            .iter()
            .map(|&i| InputFact { ty: &self.values[i].ty, value: self.values[i].konst.as_deref() })
            .collect();
        let tys = op.infer(&facts).map_err(|e| e.at_node(name, op.name()))?;
        for t in &tys {
            t.checked_len().map_err(|e| e.at_node(name, op.name()))?;
        }
        Ok(tys)
    }

    /// Finds a value by name.
    pub fn value_by_name(&self, name: &str) -> Option<TensorId> {
        self.values.iter().position(|v| v.name == name)
    }

    /// Number of uses of each value by nodes and graph outputs.
    pub fn use_counts(&self) -> Vec<usize> {
        let mut uses = vec![0; self.values.len()];
        for n in &self.nodes {
            for &i in &n.inputs {
                uses[i] += 1;
            }
        }
        for &o in &self.outputs {
            uses[o] += 1;
        }
        uses
    }

    /// The node producing each value (`None` for graph inputs and constants).
    pub fn producers(&self) -> Vec<Option<NodeId>> {
        let mut producer = vec![None; self.values.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            n.outputs.iter().for_each(|&o| producer[o] = Some(i));
        }
        producer
    }

    /// The nodes reading each value, in node order (a node reading a value twice is listed twice).
    pub fn consumers(&self) -> Vec<Vec<NodeId>> {
        let mut consumers = vec![Vec::new(); self.values.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            n.inputs.iter().for_each(|&x| consumers[x].push(i));
        }
        consumers
    }

    /// Runs the graph on the given inputs (one per [`Graph::inputs`], in order) and
    /// returns the outputs. Checks the type of every input first.
    pub fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        self.run_observed(inputs, |_, _| {})
    }

    /// Like [`Graph::run`], calling `observe(id, value)` for every graph input and node output
    /// as it is computed (calibration, per-layer error reports).
    pub fn run_observed(&self, inputs: Vec<Tensor>, mut observe: impl FnMut(TensorId, &Tensor)) -> Result<Vec<Tensor>> {
        if inputs.len() != self.inputs.len() {
            bail!("the model has {} input(s), {} given", self.inputs.len(), inputs.len());
        }
        let mut slots: Vec<Option<Arc<Tensor>>> = self.values.iter().map(|v| v.konst.clone()).collect();
        for (&id, t) in self.inputs.iter().zip(inputs) {
            let want = &self.values[id].ty;
            if &t.ty() != want {
                bail!("input `{}` must be {}, got {}", self.values[id].name, want, t.ty());
            }
            observe(id, &t);
            slots[id] = Some(Arc::new(t));
        }
        let mut remaining = self.use_counts();
        for node in &self.nodes {
            let args: Vec<&Tensor> = node
                .inputs
                .iter()
                .map(|&i| slots[i].as_deref().expect("topological order guarantees inputs"))
                .collect();
            let outs = node.op.eval(&args).map_err(|e| e.at_node(&node.name, node.op.name()))?;
            drop(args);
            for (&o, t) in node.outputs.iter().zip(outs) {
                debug_assert_eq!(t.ty(), self.values[o].ty, "node {} output type", node.name);
                observe(o, &t);
                slots[o] = Some(Arc::new(t));
            }
            for &i in &node.inputs {
                remaining[i] -= 1;
                if remaining[i] == 0 && self.values[i].konst.is_none() {
                    slots[i] = None;
                }
            }
        }
        self.outputs
            .iter()
            .map(|&o| {
                let t = slots[o].as_deref().ok_or_else(|| {
                    Error::Invalid(format!("graph output `{}` is never computed", self.values[o].name))
                })?;
                Ok(t.clone())
            })
            .collect()
    }

    /// Histogram of op types, sorted by name.
    pub fn op_histogram(&self) -> Vec<(&'static str, usize)> {
        let mut h: HashMap<&'static str, usize> = HashMap::new();
        for n in &self.nodes {
            *h.entry(n.op.name()).or_default() += 1;
        }
        let mut v: Vec<_> = h.into_iter().collect();
        v.sort();
        v
    }

    /// Multiply-accumulates of one node.
    pub fn node_macs(&self, node: &Node) -> u64 {
        let ins: Vec<&TensorType> = node.inputs.iter().map(|&i| &self.values[i].ty).collect();
        let outs: Vec<&TensorType> = node.outputs.iter().map(|&i| &self.values[i].ty).collect();
        node.op.macs(&ins, &outs)
    }
}
