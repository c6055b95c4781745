//! Tensors with a runtime element type, backed by `ndarray`.
use crate::{bail, DType, Result};
use half::f16;
use ndarray::{ArrayD, IxDyn};
use std::fmt;

/// Largest number of elements mote will allocate for one tensor (guards against
/// hostile or corrupt shapes in imported files).
pub const MAX_ELEMENTS: usize = 1 << 28;

/// Element type and static shape of a tensor.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    /// Element type.
    pub dtype: DType,
    /// Static shape (row-major, outermost first).
    pub shape: Vec<usize>,
}

impl TensorType {
    /// Builds a type from a dtype and shape.
    pub fn new(dtype: DType, shape: impl Into<Vec<usize>>) -> Self {
        TensorType { dtype, shape: shape.into() }
    }

    /// Number of elements, or an error if it overflows or exceeds [`MAX_ELEMENTS`].
    pub fn checked_len(&self) -> Result<usize> {
        let mut n: usize = 1;
        for &d in &self.shape {
            n = match n.checked_mul(d) {
                Some(n) if n <= MAX_ELEMENTS => n,
                _ => bail!("shape {:?} has more than {} elements", self.shape, MAX_ELEMENTS),
            };
        }
        Ok(n)
    }

    /// Number of elements (the shape is assumed already checked).
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size in bytes.
    pub fn bytes(&self) -> usize {
        self.len() * self.dtype.size_of()
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, shape_str(&self.shape))
    }
}

/// Formats a shape as `[1x16x64]` (`[]` for a scalar).
pub fn shape_str(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join("x"))
}

/// A dense tensor whose element type is known at run time.
#[derive(Clone, Debug, PartialEq)]
pub enum Tensor {
    /// f32 data.
    F32(ArrayD<f32>),
    /// f16 data.
    F16(ArrayD<f16>),
    /// i8 data.
    I8(ArrayD<i8>),
    /// u8 data.
    U8(ArrayD<u8>),
    /// i16 data.
    I16(ArrayD<i16>),
    /// i32 data.
    I32(ArrayD<i32>),
    /// i64 data.
    I64(ArrayD<i64>),
    /// bool data.
    Bool(ArrayD<bool>),
}

/// Applies `$body` to the inner array of any variant, binding it to `$a`.
#[macro_export]
macro_rules! dispatch {
    ($t:expr, $a:ident => $body:expr) => {
        match $t {
            $crate::Tensor::F32($a) => $body,
            $crate::Tensor::F16($a) => $body,
            $crate::Tensor::I8($a) => $body,
            $crate::Tensor::U8($a) => $body,
            $crate::Tensor::I16($a) => $body,
            $crate::Tensor::I32($a) => $body,
            $crate::Tensor::I64($a) => $body,
            $crate::Tensor::Bool($a) => $body,
        }
    };
}

/// Like [`dispatch!`], but wraps the resulting array back into the same variant.
#[macro_export]
macro_rules! map_same {
    ($t:expr, $a:ident => $body:expr) => {
        match $t {
            $crate::Tensor::F32($a) => $crate::Tensor::F32($body),
            $crate::Tensor::F16($a) => $crate::Tensor::F16($body),
            $crate::Tensor::I8($a) => $crate::Tensor::I8($body),
            $crate::Tensor::U8($a) => $crate::Tensor::U8($body),
            $crate::Tensor::I16($a) => $crate::Tensor::I16($body),
            $crate::Tensor::I32($a) => $crate::Tensor::I32($body),
            $crate::Tensor::I64($a) => $crate::Tensor::I64($body),
            $crate::Tensor::Bool($a) => $crate::Tensor::Bool($body),
        }
    };
}

/// Numeric conversion used by [`Tensor::cast`]: saturating for float→int like a C
/// cast would not be; ONNX leaves out-of-range casts undefined, we pick saturation.
pub trait Element: Copy + Default + fmt::Debug + PartialEq + 'static {
    /// This element type's [`DType`].
    const DTYPE: DType;
    /// Converts to f64 (exact for every type here).
    fn to_f64(self) -> f64;
    /// Converts from f64 (truncating toward zero and saturating for integers).
    fn from_f64(v: f64) -> Self;
    /// Wraps an array of this type into a [`Tensor`].
    fn wrap(a: ArrayD<Self>) -> Tensor;
}

macro_rules! int_element {
    ($t:ty, $d:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$d;
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn wrap(a: ArrayD<Self>) -> Tensor {
                Tensor::$d(a)
            }
        }
    };
}
int_element!(i8, I8);
int_element!(u8, U8);
int_element!(i16, I16);
int_element!(i32, I32);
int_element!(i64, I64);
int_element!(f32, F32);

impl Element for f16 {
    const DTYPE: DType = DType::F16;
    fn to_f64(self) -> f64 {
        self.to_f64()
    }
    fn from_f64(v: f64) -> Self {
        f16::from_f64(v)
    }
    fn wrap(a: ArrayD<Self>) -> Tensor {
        Tensor::F16(a)
    }
}

impl Element for bool {
    const DTYPE: DType = DType::Bool;
    fn to_f64(self) -> f64 {
        self as u8 as f64
    }
    fn from_f64(v: f64) -> Self {
        v != 0.0
    }
    fn wrap(a: ArrayD<Self>) -> Tensor {
        Tensor::Bool(a)
    }
}

impl Tensor {
    /// Element type.
    pub fn dtype(&self) -> DType {
        match self {
            Tensor::F32(_) => DType::F32,
            Tensor::F16(_) => DType::F16,
            Tensor::I8(_) => DType::I8,
            Tensor::U8(_) => DType::U8,
            Tensor::I16(_) => DType::I16,
            Tensor::I32(_) => DType::I32,
            Tensor::I64(_) => DType::I64,
            Tensor::Bool(_) => DType::Bool,
        }
    }

    /// Shape.
    pub fn shape(&self) -> &[usize] {
        dispatch!(self, a => a.shape())
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        dispatch!(self, a => a.len())
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element type and shape.
    pub fn ty(&self) -> TensorType {
        TensorType::new(self.dtype(), self.shape().to_vec())
    }

    /// A zero-filled tensor of the given type.
    pub fn zeros(ty: &TensorType) -> Tensor {
        let s = IxDyn(&ty.shape);
        match ty.dtype {
            DType::F32 => Tensor::F32(ArrayD::zeros(s)),
            DType::F16 => Tensor::F16(ArrayD::from_elem(s, f16::ZERO)),
            DType::I8 => Tensor::I8(ArrayD::zeros(s)),
            DType::U8 => Tensor::U8(ArrayD::zeros(s)),
            DType::I16 => Tensor::I16(ArrayD::zeros(s)),
            DType::I32 => Tensor::I32(ArrayD::zeros(s)),
            DType::I64 => Tensor::I64(ArrayD::zeros(s)),
            DType::Bool => Tensor::Bool(ArrayD::from_elem(s, false)),
        }
    }

    /// Builds a tensor from a shape and a flat row-major vector.
    pub fn from_vec<T: Element>(shape: &[usize], data: Vec<T>) -> Result<Tensor> {
        match ArrayD::from_shape_vec(IxDyn(shape), data) {
            Ok(a) => Ok(T::wrap(a)),
            Err(e) => bail!("cannot build a {:?} tensor: {e}", shape),
        }
    }

    /// A 0-d scalar tensor.
    pub fn scalar<T: Element>(v: T) -> Tensor {
        T::wrap(ArrayD::from_elem(IxDyn(&[]), v))
    }

    /// Converts to another element type (float→int truncates toward zero and saturates).
    pub fn cast(&self, to: DType) -> Tensor {
        if self.dtype() == to {
            return self.clone();
        }
        fn conv<S: Element, T: Element>(a: &ArrayD<S>) -> Tensor {
            T::wrap(a.mapv(|v| T::from_f64(v.to_f64())))
        }
        macro_rules! to {
            ($a:expr) => {
                match to {
                    DType::F32 => conv::<_, f32>($a),
                    DType::F16 => conv::<_, f16>($a),
                    DType::I8 => conv::<_, i8>($a),
                    DType::U8 => conv::<_, u8>($a),
                    DType::I16 => conv::<_, i16>($a),
                    DType::I32 => conv::<_, i32>($a),
                    DType::I64 => conv::<_, i64>($a),
                    DType::Bool => conv::<_, bool>($a),
                }
            };
        }
        dispatch!(self, a => to!(a))
    }

    /// The data as f32 (converting if needed).
    pub fn to_f32(&self) -> ArrayD<f32> {
        match self {
            Tensor::F32(a) => a.clone(),
            other => match other.cast(DType::F32) {
                Tensor::F32(a) => a,
                _ => unreachable!("cast to F32 yields F32"),
            },
        }
    }

    /// The data as i64 (converting if needed; floats truncate toward zero).
    pub fn to_i64(&self) -> ArrayD<i64> {
        match self {
            Tensor::I64(a) => a.clone(),
            other => match other.cast(DType::I64) {
                Tensor::I64(a) => a,
                _ => unreachable!("cast to I64 yields I64"),
            },
        }
    }

    /// The f32 array, or an error naming the actual type.
    pub fn as_f32(&self) -> Result<&ArrayD<f32>> {
        match self {
            Tensor::F32(a) => Ok(a),
            t => bail!("expected an f32 tensor, got {}", t.ty()),
        }
    }

    /// The values as a flat list of i64 (for shape, axes and index inputs).
    pub fn to_i64_vec(&self) -> Vec<i64> {
        self.to_i64().iter().copied().collect()
    }

    /// The values as a flat list of f64.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        dispatch!(self, a => a.iter().map(|v| v.to_f64()).collect())
    }

    /// Same data, new shape (element count must match).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != self.len() {
            bail!("cannot reshape {} elements of shape {:?} into {:?}", self.len(), self.shape(), shape);
        }
        Ok(map_same!(self, a => {
            let v: Vec<_> = a.iter().cloned().collect();
            ArrayD::from_shape_vec(IxDyn(shape), v).expect("element count checked")
        }))
    }
}

impl fmt::Display for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.ty())
    }
}
