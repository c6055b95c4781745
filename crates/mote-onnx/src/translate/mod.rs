//! ONNX op → mote op translation. One function per ONNX op (or family), looked
//! up in [`TABLE`] by domain and op type. Translators read attributes and constant
//! inputs from the [`NodeCtx`] and bake them into the mote op; the returned
//! [`Translated::inputs`] lists which ONNX inputs stay data inputs of the node.
use crate::ctx::NodeCtx;
use mote_core::{Op, Result};

mod conv;
mod deeploy;
mod elementwise;
mod matmul;
mod nn;
mod quant;
mod shape;

/// The result of translating one ONNX node.
pub struct Translated {
    /// The mote op.
    pub op: Box<dyn Op>,
    /// Indices into the ONNX node's inputs that become the op's data inputs, in order.
    pub inputs: Vec<usize>,
}

impl Translated {
    /// An op that reads the node's inputs `0..n`.
    pub fn first(op: impl Op + 'static, n: usize) -> Result<Translated> {
        Ok(Translated { op: Box::new(op), inputs: (0..n).collect() })
    }

    /// An op that reads the given ONNX inputs.
    pub fn with(op: impl Op + 'static, inputs: Vec<usize>) -> Result<Translated> {
        Ok(Translated { op: Box::new(op), inputs })
    }
}

/// A translator function.
pub type TranslateFn = fn(&NodeCtx) -> Result<Translated>;

/// Domain used for ops of the default ONNX domain (`""` or `ai.onnx` in files).
pub const ONNX: &str = "";
/// Microsoft contrib ops (Gelu as written by onnxruntime's exporters).
pub const MS: &str = "com.microsoft";

/// Every supported (domain, op type). Deeploy's custom ops use the default domain.
pub static TABLE: &[(&str, &str, TranslateFn)] = &[
    (ONNX, "Add", elementwise::add),
    (ONNX, "Sub", elementwise::sub),
    (ONNX, "Mul", elementwise::mul),
    (ONNX, "Div", elementwise::div),
    (ONNX, "Pow", elementwise::pow),
    (ONNX, "Mod", elementwise::modulo),
    (ONNX, "Max", elementwise::max),
    (ONNX, "Min", elementwise::min),
    (ONNX, "Equal", elementwise::equal),
    (ONNX, "Less", elementwise::less),
    (ONNX, "Greater", elementwise::greater),
    (ONNX, "And", elementwise::and),
    (ONNX, "Or", elementwise::or),
    (ONNX, "Not", elementwise::not),
    (ONNX, "Sqrt", elementwise::sqrt),
    (ONNX, "Erf", elementwise::erf),
    (ONNX, "Relu", elementwise::relu),
    (ONNX, "Sigmoid", elementwise::sigmoid),
    (ONNX, "Tanh", elementwise::tanh),
    (ONNX, "Exp", elementwise::exp),
    (ONNX, "Log", elementwise::log),
    (ONNX, "Neg", elementwise::neg),
    (ONNX, "Abs", elementwise::abs),
    (ONNX, "Reciprocal", elementwise::reciprocal),
    (ONNX, "Round", elementwise::round),
    (ONNX, "Floor", elementwise::floor),
    (ONNX, "Ceil", elementwise::ceil),
    (ONNX, "HardSwish", elementwise::hard_swish),
    (ONNX, "HardSigmoid", elementwise::hard_sigmoid),
    (ONNX, "LeakyRelu", elementwise::leaky_relu),
    (ONNX, "Gelu", elementwise::gelu),
    (MS, "Gelu", elementwise::gelu),
    (ONNX, "Clip", elementwise::clip),
    (ONNX, "Cast", elementwise::cast),
    (ONNX, "Where", elementwise::where_),
    (ONNX, "MatMul", matmul::matmul),
    (ONNX, "Gemm", matmul::gemm),
    (ONNX, "Softmax", nn::softmax),
    (ONNX, "LayerNormalization", nn::layer_norm),
    (ONNX, "RMSNorm", nn::rms_norm),
    (ONNX, "RMSNormalization", nn::simplified_layer_norm),
    (ONNX, "SimplifiedLayerNormalization", nn::simplified_layer_norm),
    (MS, "SimplifiedLayerNormalization", nn::simplified_layer_norm),
    (ONNX, "ReduceMean", nn::reduce_mean),
    (ONNX, "ReduceSum", nn::reduce_sum),
    (ONNX, "ReduceMax", nn::reduce_max),
    (ONNX, "ReduceMin", nn::reduce_min),
    (ONNX, "Conv", conv::conv),
    (ONNX, "MaxPool", conv::max_pool),
    (ONNX, "AveragePool", conv::average_pool),
    (ONNX, "GlobalAveragePool", conv::global_average_pool),
    (ONNX, "GlobalMaxPool", conv::global_max_pool),
    (ONNX, "Reshape", shape::reshape),
    (ONNX, "Flatten", shape::flatten),
    (ONNX, "Squeeze", shape::squeeze),
    (ONNX, "Unsqueeze", shape::unsqueeze),
    (ONNX, "Transpose", shape::transpose),
    (ONNX, "Concat", shape::concat),
    (ONNX, "Slice", shape::slice),
    (ONNX, "Gather", shape::gather),
    (ONNX, "Split", shape::split),
    (ONNX, "Expand", shape::expand),
    (ONNX, "Tile", shape::tile),
    (ONNX, "Trilu", shape::trilu),
    (ONNX, "Shape", shape::shape),
    (ONNX, "Size", shape::size),
    (ONNX, "ConstantOfShape", shape::constant_of_shape),
    (ONNX, "Range", shape::range),
    (ONNX, "QuantizeLinear", quant::quantize_linear),
    (ONNX, "DequantizeLinear", quant::dequantize_linear),
    (MS, "QuantizeLinear", quant::quantize_linear),
    (MS, "DequantizeLinear", quant::dequantize_linear),
    (ONNX, "RequantShift", deeploy::requant_shift),
    (ONNX, "iSoftmax", deeploy::isoftmax),
    (ONNX, "ITAMax", deeploy::itamax),
    (ONNX, "iLayerNorm", deeploy::ilayernorm),
    (ONNX, "iRMSNorm", deeploy::irmsnorm),
    (ONNX, "iGELU", deeploy::igelu),
    (ONNX, "iHardswish", deeploy::ihardswish),
    (ONNX, "TrueIntegerDiv", deeploy::true_integer_div),
    (ONNX, "IntegerMean", deeploy::integer_mean),
];

/// Deeploy's integer op types: a graph containing any of them is an integer graph, whose
/// float-declared tensors hold exact integers (SEMANTICS.md §2.1).
pub const DEEPLOY_INTEGER_OPS: &[&str] = &[
    "RequantShift",
    "iSoftmax",
    "ITAMax",
    "iLayerNorm",
    "iRMSNorm",
    "iGELU",
    "iHardswish",
    "TrueIntegerDiv",
    "IntegerMean",
];

/// The translator for an op, if mote supports it. `ai.onnx` is the default domain.
pub fn lookup(domain: &str, op_type: &str) -> Option<TranslateFn> {
    let domain = if domain == "ai.onnx" { ONNX } else { domain };
    TABLE.iter().find(|(d, o, _)| *d == domain && *o == op_type).map(|(_, _, f)| *f)
}
