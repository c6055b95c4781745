//! Element-wise ops with numpy/ONNX broadcasting: binary arithmetic and
//! comparisons, unary math and activations, `Where`, `Cast`, `Clip`.
use crate::op::InputFact;
use crate::{bail, ensure, op_common, DType, Op, Result, Tensor, TensorType};
use half::f16;
use ndarray::{ArrayD, IxDyn, Zip};

/// Broadcasts shapes numpy-style (aligned from the right).
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
        let db = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => bail!("shapes {:?} and {:?} do not broadcast", a, b),
        };
    }
    Ok(out)
}

/// Applies `f` element-wise to two arrays broadcast to `shape`.
pub fn zip_broadcast<A: Clone, B: Clone, C>(
    a: &ArrayD<A>,
    b: &ArrayD<B>,
    shape: &[usize],
    mut f: impl FnMut(A, B) -> C,
) -> ArrayD<C> {
    let sh = IxDyn(shape);
    let av = a.broadcast(sh.clone()).expect("shapes checked by infer");
    let bv = b.broadcast(sh).expect("shapes checked by infer");
    Zip::from(&av).and(&bv).map_collect(|x, y| f(x.clone(), y.clone()))
}

/// The binary element-wise operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryKind {
    /// a + b
    Add,
    /// a - b
    Sub,
    /// a * b
    Mul,
    /// a / b (integer division truncates toward zero, as ONNX specifies)
    Div,
    /// a ^ b
    Pow,
    /// ONNX Mod with fmod=0 (sign of the divisor)
    Mod,
    /// ONNX Mod with fmod=1 (sign of the dividend)
    Fmod,
    /// max(a, b)
    Max,
    /// min(a, b)
    Min,
    /// a == b (bool output)
    Equal,
    /// a < b (bool output)
    Less,
    /// a > b (bool output)
    Greater,
    /// a && b on bools
    And,
    /// a || b on bools
    Or,
}

impl BinaryKind {
    fn is_comparison(self) -> bool {
        matches!(self, BinaryKind::Equal | BinaryKind::Less | BinaryKind::Greater)
    }
    fn is_logical(self) -> bool {
        matches!(self, BinaryKind::And | BinaryKind::Or)
    }
}

/// A binary element-wise op with broadcasting.
#[derive(Clone, Debug)]
pub struct Binary {
    /// Which operation.
    pub kind: BinaryKind,
}

impl Binary {
    /// Builds a binary op.
    pub fn new(kind: BinaryKind) -> Self {
        Binary { kind }
    }
}

fn float_bin(k: BinaryKind, x: f32, y: f32) -> f32 {
    match k {
        BinaryKind::Add => x + y,
        BinaryKind::Sub => x - y,
        BinaryKind::Mul => x * y,
        BinaryKind::Div => x / y,
        BinaryKind::Pow => x.powf(y),
        BinaryKind::Fmod => x % y,
        BinaryKind::Mod => {
            let r = x % y;
            if r != 0.0 && ((r < 0.0) != (y < 0.0)) {
                r + y
            } else {
                r
            }
        }
        BinaryKind::Max => x.max(y),
        BinaryKind::Min => x.min(y),
        _ => unreachable!("not an arithmetic op"),
    }
}

fn int_bin(k: BinaryKind, x: i64, y: i64) -> Result<i64> {
    Ok(match k {
        BinaryKind::Add => x.wrapping_add(y),
        BinaryKind::Sub => x.wrapping_sub(y),
        BinaryKind::Mul => x.wrapping_mul(y),
        BinaryKind::Div | BinaryKind::Mod | BinaryKind::Fmod if y == 0 => bail!("integer division by zero"),
        BinaryKind::Div => x.wrapping_div(y),
        BinaryKind::Fmod => x.wrapping_rem(y),
        BinaryKind::Mod => {
            let r = x.wrapping_rem(y);
            if r != 0 && ((r < 0) != (y < 0)) {
                r + y
            } else {
                r
            }
        }
        BinaryKind::Pow => {
            ensure!(y >= 0, "integer Pow with a negative exponent");
            x.wrapping_pow(y.min(u32::MAX as i64) as u32)
        }
        BinaryKind::Max => x.max(y),
        BinaryKind::Min => x.min(y),
        _ => unreachable!("not an arithmetic op"),
    })
}

impl Op for Binary {
    fn name(&self) -> &'static str {
        match self.kind {
            BinaryKind::Add => "Add",
            BinaryKind::Sub => "Sub",
            BinaryKind::Mul => "Mul",
            BinaryKind::Div => "Div",
            BinaryKind::Pow => "Pow",
            BinaryKind::Mod | BinaryKind::Fmod => "Mod",
            BinaryKind::Max => "Max",
            BinaryKind::Min => "Min",
            BinaryKind::Equal => "Equal",
            BinaryKind::Less => "Less",
            BinaryKind::Greater => "Greater",
            BinaryKind::And => "And",
            BinaryKind::Or => "Or",
        }
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        ensure!(inputs.len() == 2, "expects 2 inputs, got {}", inputs.len());
        let (a, b) = (inputs[0].ty, inputs[1].ty);
        let shape = broadcast_shapes(&a.shape, &b.shape)?;
        let dtype = if self.kind == BinaryKind::Pow {
            a.dtype
        } else {
            ensure!(a.dtype == b.dtype, "operand types differ: {} and {}", a.dtype, b.dtype);
            if self.kind.is_logical() {
                ensure!(a.dtype == DType::Bool, "{:?} needs bool operands, got {}", self.kind, a.dtype);
                DType::Bool
            } else if self.kind.is_comparison() {
                DType::Bool
            } else {
                ensure!(a.dtype != DType::Bool, "{:?} on bool operands", self.kind);
                a.dtype
            }
        };
        Ok(vec![TensorType::new(dtype, shape)])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let (a, b) = (inputs[0], inputs[1]);
        let shape = broadcast_shapes(a.shape(), b.shape())?;
        let k = self.kind;
        let out = if k.is_logical() {
            let (Tensor::Bool(x), Tensor::Bool(y)) = (a, b) else { bail!("{:?} needs bool operands", k) };
            Tensor::Bool(zip_broadcast(x, y, &shape, |p, q| if k == BinaryKind::And { p && q } else { p || q }))
        } else if k.is_comparison() {
            fn cmp<T: PartialOrd>(k: BinaryKind, x: T, y: T) -> bool {
                match k {
                    BinaryKind::Equal => x == y,
                    BinaryKind::Less => x < y,
                    _ => x > y,
                }
            }
            if a.dtype().is_float() {
                Tensor::Bool(zip_broadcast(&a.to_f32(), &b.to_f32(), &shape, |p, q| cmp(k, p, q)))
            } else {
                Tensor::Bool(zip_broadcast(&a.to_i64(), &b.to_i64(), &shape, |p, q| cmp(k, p, q)))
            }
        } else {
            match (a, b) {
                (Tensor::F32(x), _) => {
                    let y = b.to_f32();
                    Tensor::F32(zip_broadcast(x, &y, &shape, |p, q| float_bin(k, p, q)))
                }
                (Tensor::F16(x), _) => {
                    let y = b.to_f32();
                    Tensor::F16(zip_broadcast(x, &y, &shape, |p, q| f16::from_f32(float_bin(k, p.to_f32(), q))))
                }
                _ => {
                    let (x, y) = (a.to_i64(), b.to_i64());
                    let mut err = None;
                    let r = zip_broadcast(&x, &y, &shape, |p, q| {
                        int_bin(k, p, q).unwrap_or_else(|e| {
                            err = Some(e);
                            0
                        })
                    });
                    if let Some(e) = err {
                        return Err(e);
                    }
                    Tensor::I64(r).cast(a.dtype())
                }
            }
        };
        Ok(vec![out])
    }

    fn macs(&self, _inputs: &[&TensorType], outputs: &[&TensorType]) -> u64 {
        match self.kind {
            BinaryKind::Mul | BinaryKind::Div | BinaryKind::Pow => outputs[0].len() as u64,
            _ => 0,
        }
    }
}

/// The unary element-wise float functions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryKind {
    /// sqrt(x)
    Sqrt,
    /// erf(x)
    Erf,
    /// max(x, 0)
    Relu,
    /// 1 / (1 + exp(-x))
    Sigmoid,
    /// tanh(x)
    Tanh,
    /// exp(x)
    Exp,
    /// ln(x)
    Log,
    /// -x
    Neg,
    /// |x|
    Abs,
    /// 1 / x
    Reciprocal,
    /// round half to even
    Round,
    /// floor(x)
    Floor,
    /// ceil(x)
    Ceil,
    /// x * clamp(x/6 + 1/2, 0, 1)
    HardSwish,
    /// clamp(alpha*x + beta, 0, 1)
    HardSigmoid {
        /// slope
        alpha: f32,
        /// offset
        beta: f32,
    },
    /// x * sigmoid(x)
    Silu,
    /// x if x >= 0 else alpha*x
    LeakyRelu {
        /// negative slope
        alpha: f32,
    },
    /// 0.5·x·(1 + erf(x/√2))
    Gelu,
    /// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
    GeluTanh,
    /// clamp(x, min, max)
    Clip {
        /// lower bound
        min: f32,
        /// upper bound
        max: f32,
    },
    /// logical not (bool)
    Not,
}

impl UnaryKind {
    /// Applies the function to one f32.
    pub fn apply(self, x: f32) -> f32 {
        match self {
            UnaryKind::Sqrt => x.sqrt(),
            UnaryKind::Erf => libm::erff(x),
            UnaryKind::Relu => x.max(0.0),
            UnaryKind::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            UnaryKind::Tanh => x.tanh(),
            UnaryKind::Exp => x.exp(),
            UnaryKind::Log => x.ln(),
            UnaryKind::Neg => -x,
            UnaryKind::Abs => x.abs(),
            UnaryKind::Reciprocal => 1.0 / x,
            UnaryKind::Round => x.round_ties_even(),
            UnaryKind::Floor => x.floor(),
            UnaryKind::Ceil => x.ceil(),
            UnaryKind::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            UnaryKind::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            UnaryKind::Silu => x / (1.0 + (-x).exp()),
            UnaryKind::LeakyRelu { alpha } => {
                if x >= 0.0 {
                    x
                } else {
                    alpha * x
                }
            }
            UnaryKind::Gelu => 0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2)),
            UnaryKind::GeluTanh => {
                let c = (2.0f32 / std::f32::consts::PI).sqrt();
                0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
            }
            UnaryKind::Clip { min, max } => x.max(min).min(max),
            UnaryKind::Not => unreachable!("Not is applied on bools"),
        }
    }

    /// Name used in op histograms.
    pub fn op_name(self) -> &'static str {
        match self {
            UnaryKind::Sqrt => "Sqrt",
            UnaryKind::Erf => "Erf",
            UnaryKind::Relu => "Relu",
            UnaryKind::Sigmoid => "Sigmoid",
            UnaryKind::Tanh => "Tanh",
            UnaryKind::Exp => "Exp",
            UnaryKind::Log => "Log",
            UnaryKind::Neg => "Neg",
            UnaryKind::Abs => "Abs",
            UnaryKind::Reciprocal => "Reciprocal",
            UnaryKind::Round => "Round",
            UnaryKind::Floor => "Floor",
            UnaryKind::Ceil => "Ceil",
            UnaryKind::HardSwish => "HardSwish",
            UnaryKind::HardSigmoid { .. } => "HardSigmoid",
            UnaryKind::Silu => "Silu",
            UnaryKind::LeakyRelu { .. } => "LeakyRelu",
            UnaryKind::Gelu => "Gelu",
            UnaryKind::GeluTanh => "GeluTanh",
            UnaryKind::Clip { .. } => "Clip",
            UnaryKind::Not => "Not",
        }
    }
}

/// A unary element-wise op. Float functions run in f32; on integer inputs only
/// the exact ones (Neg, Abs, Relu, Clip, Round/Floor/Ceil as identity) are allowed.
#[derive(Clone, Debug)]
pub struct Unary {
    /// Which function.
    pub kind: UnaryKind,
}

impl Unary {
    /// Builds a unary op.
    pub fn new(kind: UnaryKind) -> Self {
        Unary { kind }
    }

    fn exact_on_integers(&self) -> bool {
        matches!(
            self.kind,
            UnaryKind::Neg
                | UnaryKind::Abs
                | UnaryKind::Relu
                | UnaryKind::Clip { .. }
                | UnaryKind::Round
                | UnaryKind::Floor
                | UnaryKind::Ceil
        )
    }
}

impl Op for Unary {
    fn name(&self) -> &'static str {
        self.kind.op_name()
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        ensure!(inputs.len() == 1, "expects 1 input, got {}", inputs.len());
        let t = inputs[0].ty;
        if self.kind == UnaryKind::Not {
            ensure!(t.dtype == DType::Bool, "Not needs a bool input, got {}", t.dtype);
        } else if !t.dtype.is_float() {
            ensure!(
                self.exact_on_integers() && t.dtype != DType::Bool,
                "{} needs a float input, got {}",
                self.kind.op_name(),
                t.dtype
            );
        }
        Ok(vec![t.clone()])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let k = self.kind;
        let out = match inputs[0] {
            Tensor::F32(a) => Tensor::F32(a.mapv(|x| k.apply(x))),
            Tensor::F16(a) => Tensor::F16(a.mapv(|x| f16::from_f32(k.apply(x.to_f32())))),
            Tensor::Bool(a) => Tensor::Bool(a.mapv(|x| !x)),
            t => {
                let a = t.to_i64();
                let r = match k {
                    UnaryKind::Neg => a.mapv(|x| x.wrapping_neg()),
                    UnaryKind::Abs => a.mapv(|x| x.wrapping_abs()),
                    UnaryKind::Relu => a.mapv(|x| x.max(0)),
                    UnaryKind::Clip { min, max } => a.mapv(|x| (x as f64).clamp(min as f64, max as f64) as i64),
                    _ => a,
                };
                Tensor::I64(r).cast(t.dtype())
            }
        };
        Ok(vec![out])
    }
}

/// `Where(cond, a, b)`: elements of `a` where `cond`, else of `b`, broadcast.
#[derive(Clone, Debug)]
pub struct Where;

impl Op for Where {
    op_common!("Where");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        ensure!(inputs.len() == 3, "expects 3 inputs, got {}", inputs.len());
        ensure!(inputs[0].ty.dtype == DType::Bool, "condition must be bool, got {}", inputs[0].ty.dtype);
        ensure!(inputs[1].ty.dtype == inputs[2].ty.dtype, "branch types differ");
        let s = broadcast_shapes(&inputs[0].ty.shape, &inputs[1].ty.shape)?;
        let s = broadcast_shapes(&s, &inputs[2].ty.shape)?;
        Ok(vec![TensorType::new(inputs[1].ty.dtype, s)])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let Tensor::Bool(c) = inputs[0] else { bail!("condition must be bool") };
        let s = broadcast_shapes(c.shape(), inputs[1].shape())?;
        let s = broadcast_shapes(&s, inputs[2].shape())?;
        let sh = IxDyn(&s);
        let cv = c.broadcast(sh.clone()).expect("checked");
        macro_rules! sel {
            ($a:expr, $b:expr) => {{
                let av = $a.broadcast(sh.clone()).expect("checked");
                let bv = $b.broadcast(sh.clone()).expect("checked");
                Zip::from(&cv).and(&av).and(&bv).map_collect(|&c, a, b| if c { a.clone() } else { b.clone() })
            }};
        }
        let out = match (inputs[1], inputs[2]) {
            (Tensor::F32(a), Tensor::F32(b)) => Tensor::F32(sel!(a, b)),
            (Tensor::F16(a), Tensor::F16(b)) => Tensor::F16(sel!(a, b)),
            (Tensor::Bool(a), Tensor::Bool(b)) => Tensor::Bool(sel!(a, b)),
            (a, b) => {
                let (x, y) = (a.to_i64(), b.to_i64());
                Tensor::I64(sel!(x, y)).cast(a.dtype())
            }
        };
        Ok(vec![out])
    }
}

/// `Cast` to another element type.
#[derive(Clone, Debug)]
pub struct Cast {
    /// Target type.
    pub to: DType,
}

impl Op for Cast {
    op_common!("Cast");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        ensure!(inputs.len() == 1, "expects 1 input, got {}", inputs.len());
        Ok(vec![TensorType::new(self.to, inputs[0].ty.shape.clone())])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        Ok(vec![inputs[0].cast(self.to)])
    }
}
