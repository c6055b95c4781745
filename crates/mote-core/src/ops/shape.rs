//! Data movement and shape ops. They work on every element type (they also run on
//! i64 shape arithmetic during constant folding, and on integer tensors later).
use super::elementwise::broadcast_shapes;
use crate::op::InputFact;
use crate::tensor::Element;
use crate::{bail, dispatch, ensure, map_same, op_common, DType, Op, Result, Tensor, TensorType};
use half::f16;
use ndarray::{concatenate, ArrayD, ArrayViewD, Axis, IxDyn, Slice as NdSlice};

/// Typed access to the array inside a [`Tensor`].
trait Typed: Element + Clone {
    fn arr(t: &Tensor) -> Option<&ArrayD<Self>>;
}

macro_rules! typed {
    ($($t:ty => $v:ident),*) => {$(
        impl Typed for $t {
            fn arr(t: &Tensor) -> Option<&ArrayD<$t>> {
                match t {
                    Tensor::$v(a) => Some(a),
                    _ => None,
                }
            }
        }
    )*};
}
typed!(f32 => F32, f16 => F16, i8 => I8, u8 => U8, i16 => I16, i32 => I32, i64 => I64, bool => Bool);

/// Copies an array into standard (row-major) layout.
fn standard<T: Clone>(a: ArrayViewD<'_, T>) -> ArrayD<T> {
    a.as_standard_layout().into_owned()
}

fn one_input<'a>(inputs: &[InputFact<'a>]) -> Result<&'a TensorType> {
    ensure!(inputs.len() == 1, "expects 1 input, got {}", inputs.len());
    Ok(inputs[0].ty)
}

/// Ops that only move or select values (their output holds input values, none computed): their
/// int8 form is the same op on the bytes, and value ranges pass through them.
pub const DATA_MOVEMENT: &[&str] =
    &["Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Slice", "Gather", "Split", "Expand", "Tile"];

/// Resolves an ONNX Reshape target: `0` copies the input dim (unless `allowzero`),
/// one `-1` is inferred. The element count must match.
pub fn resolve_reshape(input: &[usize], spec: &[i64], allowzero: bool) -> Result<Vec<usize>> {
    let total: usize = input.iter().product();
    let mut out = Vec::with_capacity(spec.len());
    let mut infer_at = None;
    for (i, &d) in spec.iter().enumerate() {
        out.push(match d {
            -1 => {
                ensure!(infer_at.is_none(), "shape {:?} has more than one -1", spec);
                infer_at = Some(i);
                1
            }
            0 if !allowzero => match input.get(i) {
                Some(&d) => d,
                None => bail!("shape {:?}: 0 at index {i} copies a dim the input {:?} does not have", spec, input),
            },
            d if d >= 0 => d as usize,
            d => bail!("shape {:?} has an invalid dim {d}", spec),
        });
    }
    if let Some(i) = infer_at {
        let known: usize = out.iter().product();
        ensure!(
            known != 0 && total.is_multiple_of(known),
            "cannot reshape {:?} ({total} elements) into {:?}",
            input,
            spec
        );
        out[i] = total / known;
    }
    let n: usize = out.iter().product();
    ensure!(n == total, "cannot reshape {:?} ({total} elements) into {:?} ({n} elements)", input, out);
    Ok(out)
}

/// `Reshape` to a fixed shape; also used for Flatten, Squeeze and Unsqueeze
/// (`label` is the ONNX op name, shown in op histograms).
#[derive(Clone, Debug)]
pub struct Reshape {
    /// The output shape (fully resolved).
    pub shape: Vec<usize>,
    /// Op name reported by [`Op::name`].
    pub label: &'static str,
}

impl Op for Reshape {
    fn name(&self) -> &'static str {
        self.label
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        let x = one_input(inputs)?;
        let out = TensorType::new(x.dtype, self.shape.clone());
        ensure!(
            out.checked_len()? == x.len(),
            "cannot reshape {} elements of shape {:?} into {:?}",
            x.len(),
            x.shape,
            self.shape
        );
        Ok(vec![out])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        Ok(vec![inputs[0].reshape(&self.shape)?])
    }
}

/// `Transpose` by a permutation of the axes.
#[derive(Clone, Debug)]
pub struct Transpose {
    /// Output axis i is input axis `perm[i]`.
    pub perm: Vec<usize>,
}

impl Transpose {
    fn check(&self, shape: &[usize]) -> Result<Vec<usize>> {
        let r = shape.len();
        let mut seen = vec![false; r];
        ensure!(self.perm.len() == r, "perm {:?} has {} entries, the input has rank {r}", self.perm, self.perm.len());
        for &p in &self.perm {
            ensure!(p < r && !seen[p], "perm {:?} is not a permutation of 0..{r}", self.perm);
            seen[p] = true;
        }
        Ok(self.perm.iter().map(|&p| shape[p]).collect())
    }
}

impl Op for Transpose {
    op_common!("Transpose");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        let x = one_input(inputs)?;
        Ok(vec![TensorType::new(x.dtype, self.check(&x.shape)?)])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        self.check(inputs[0].shape())?;
        let perm = IxDyn(&self.perm);
        Ok(vec![map_same!(inputs[0], a => standard(a.view().permuted_axes(perm.clone())))])
    }
}

/// `Concat` along one axis. Operands with no elements whose shape does not fit are
/// ignored (concatenating an empty tensor is the identity on the others).
#[derive(Clone, Debug)]
pub struct Concat {
    /// The concatenation axis (resolved, non-negative).
    pub axis: usize,
}

impl Concat {
    /// The operands that take part and the output shape.
    fn plan(&self, shapes: &[&[usize]]) -> Result<(Vec<usize>, Vec<usize>)> {
        ensure!(!shapes.is_empty(), "expects at least 1 input");
        let len = |s: &[usize]| s.iter().product::<usize>();
        let reference = shapes.iter().copied().find(|s| len(s) > 0).unwrap_or(shapes[0]);
        let ax = self.axis;
        ensure!(ax < reference.len(), "axis {ax} is out of range for rank {}", reference.len());
        let fits = |s: &[usize]| s.len() == reference.len() && (0..s.len()).all(|i| i == ax || s[i] == reference[i]);
        let mut used = Vec::new();
        let mut out = reference.to_vec();
        out[ax] = 0;
        for (i, s) in shapes.iter().enumerate() {
            if fits(s) {
                used.push(i);
                out[ax] += s[ax];
            } else {
                ensure!(len(s) == 0, "operand #{i} has shape {:?}, which does not fit {:?} on axis {ax}", s, reference);
            }
        }
        Ok((used, out))
    }
}

fn concat_typed<T: Typed>(_witness: &ArrayD<T>, ts: &[&Tensor], axis: usize) -> Result<Tensor> {
    let views: Vec<ArrayViewD<T>> = ts
        .iter()
        .map(|t| match T::arr(t) {
            Some(a) => Ok(a.view()),
            None => bail!("operand types differ: {} and {}", T::DTYPE, t.dtype()),
        })
        .collect::<Result<_>>()?;
    match concatenate(Axis(axis), &views) {
        Ok(a) => Ok(T::wrap(a)),
        Err(e) => bail!("cannot concatenate: {e}"),
    }
}

impl Op for Concat {
    op_common!("Concat");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        ensure!(!inputs.is_empty(), "expects at least 1 input");
        let dtype = inputs[0].ty.dtype;
        for (i, f) in inputs.iter().enumerate() {
            ensure!(f.ty.dtype == dtype, "operand #{i} is {}, operand #0 is {dtype}", f.ty.dtype);
        }
        let shapes: Vec<&[usize]> = inputs.iter().map(|f| &f.ty.shape[..]).collect();
        Ok(vec![TensorType::new(dtype, self.plan(&shapes)?.1)])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
        let (used, _) = self.plan(&shapes)?;
        let ts: Vec<&Tensor> = used.iter().map(|&i| inputs[i]).collect();
        let out = dispatch!(ts[0], a => concat_typed(a, &ts, self.axis)?);
        Ok(vec![out])
    }
}

/// Resolves one axis of an ONNX Slice (negative start/end count from the end, then
/// clamping) into a python-style range `start..end` by `step` that stays in `0..dim`
/// (for a negative step, `end` may be −1).
pub fn resolve_slice(start: i64, end: i64, step: i64, dim: usize) -> Result<(i64, i64)> {
    ensure!(step != 0, "slice step must not be 0");
    let d = dim as i64;
    let fix = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
    let (s, e) = (fix(start), fix(end));
    Ok(if step > 0 { (s.clamp(0, d), e.clamp(0, d)) } else { (s.max(0).min(d - 1), e.max(-1).min(d - 1)) })
}

/// Number of elements of the python range `start..end` by `step`.
fn range_len(start: i64, end: i64, step: i64) -> usize {
    let (s, e, st) = (start as i128, end as i128, step as i128);
    let n = if st > 0 && e > s {
        (e - s - 1) / st + 1
    } else if st < 0 && s > e {
        (s - e - 1) / (-st) + 1
    } else {
        0
    };
    n as usize
}

/// `Slice` with one resolved range per axis: the python range `starts[i]..ends[i]`
/// by `steps[i]` (negative steps allowed); every selected index must be in bounds.
/// The translator resolves ONNX's negative indices and clamping ([`resolve_slice`]).
#[derive(Clone, Debug)]
pub struct Slice {
    /// First index per axis.
    pub starts: Vec<i64>,
    /// Exclusive end per axis.
    pub ends: Vec<i64>,
    /// Step per axis (non-zero).
    pub steps: Vec<i64>,
}

impl Slice {
    /// Per axis, the ndarray slice and the output length.
    fn ranges(&self, shape: &[usize]) -> Result<Vec<(NdSlice, usize)>> {
        let r = shape.len();
        ensure!(
            self.starts.len() == r && self.ends.len() == r && self.steps.len() == r,
            "slice has {}/{}/{} starts/ends/steps, the input has rank {r}",
            self.starts.len(),
            self.ends.len(),
            self.steps.len()
        );
        let mut out = Vec::with_capacity(r);
        for (i, &dim) in shape.iter().enumerate() {
            let (s, e, st) = (self.starts[i], self.ends[i], self.steps[i]);
            ensure!(st != 0, "slice step must not be 0");
            let n = range_len(s, e, st);
            if n == 0 {
                out.push((NdSlice::new(0, Some(0), 1), 0));
                continue;
            }
            let last = s as i128 + (n as i128 - 1) * st as i128;
            let ok = |v: i128| v >= 0 && v < dim as i128;
            ensure!(ok(s as i128) && ok(last), "slice {s}..{e} step {st} is out of range for axis {i} of size {dim}");
            let sl = if st > 0 {
                NdSlice::new(s as isize, Some(last as isize + 1), st as isize)
            } else {
                NdSlice::new(last as isize, Some(s as isize + 1), st as isize)
            };
            out.push((sl, n));
        }
        Ok(out)
    }
}

impl Op for Slice {
    op_common!("Slice");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        let x = one_input(inputs)?;
        let shape = self.ranges(&x.shape)?.iter().map(|r| r.1).collect::<Vec<_>>();
        Ok(vec![TensorType::new(x.dtype, shape)])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let ranges = self.ranges(inputs[0].shape())?;
        let out = map_same!(inputs[0], a => standard(a.slice_each_axis(|ad| ranges[ad.axis.index()].0)));
        Ok(vec![out])
    }
}

/// Validates gather indices and wraps negative ones.
fn gather_indices(idx: &Tensor, size: usize) -> Result<Vec<usize>> {
    idx.to_i64_vec()
        .into_iter()
        .map(|i| {
            let j = if i < 0 { i + size as i64 } else { i };
            ensure!(j >= 0 && (j as usize) < size, "index {i} out of range for axis of size {size}");
            Ok(j as usize)
        })
        .collect()
}

fn gather_typed<T: Clone>(a: &ArrayD<T>, axis: usize, idx: &[usize], out_shape: &[usize]) -> Result<ArrayD<T>> {
    let a = a.as_standard_layout();
    let Some(s) = a.as_slice() else { bail!("internal: array not contiguous") };
    let d = a.shape()[axis];
    let inner: usize = a.shape()[axis + 1..].iter().product();
    let outer: usize = a.shape()[..axis].iter().product();
    let mut v = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        for &i in idx {
            v.extend_from_slice(&s[(o * d + i) * inner..][..inner]);
        }
    }
    ArrayD::from_shape_vec(IxDyn(out_shape), v).map_err(|e| crate::Error::Invalid(e.to_string()))
}

/// `Gather` along one axis: inputs data and indices (i32/i64, negative indices wrap).
/// Output shape: `data[..axis] + indices + data[axis+1..]`.
#[derive(Clone, Debug)]
pub struct Gather {
    /// The gathered axis of data (resolved, non-negative).
    pub axis: usize,
}

impl Gather {
    fn out_shape(&self, data: &[usize], idx: &[usize]) -> Result<Vec<usize>> {
        ensure!(self.axis < data.len(), "axis {} is out of range for rank {}", self.axis, data.len());
        Ok([&data[..self.axis], idx, &data[self.axis + 1..]].concat())
    }
}

impl Op for Gather {
    op_common!("Gather");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        ensure!(inputs.len() == 2, "expects 2 inputs (data, indices), got {}", inputs.len());
        let (data, idx) = (inputs[0].ty, inputs[1].ty);
        ensure!(matches!(idx.dtype, DType::I32 | DType::I64), "indices must be i32 or i64, got {}", idx.dtype);
        let shape = self.out_shape(&data.shape, &idx.shape)?;
        if let Some(v) = inputs[1].value {
            gather_indices(v, data.shape[self.axis])?;
        }
        Ok(vec![TensorType::new(data.dtype, shape)])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let (data, idx) = (inputs[0], inputs[1]);
        ensure!(matches!(idx.dtype(), DType::I32 | DType::I64), "indices must be i32 or i64, got {}", idx.dtype());
        let shape = self.out_shape(data.shape(), idx.shape())?;
        let ix = gather_indices(idx, data.shape()[self.axis])?;
        Ok(vec![map_same!(data, a => gather_typed(a, self.axis, &ix, &shape)?)])
    }
}

/// `Split` along one axis into pieces of the given sizes (one output per size).
#[derive(Clone, Debug)]
pub struct Split {
    /// The split axis (resolved, non-negative).
    pub axis: usize,
    /// Size of each piece along the axis; they must add up to the axis size.
    pub sizes: Vec<usize>,
}

impl Split {
    fn check(&self, shape: &[usize]) -> Result<()> {
        ensure!(self.axis < shape.len(), "axis {} is out of range for rank {}", self.axis, shape.len());
        let total: usize = self.sizes.iter().sum();
        ensure!(
            total == shape[self.axis],
            "split sizes {:?} add up to {total}, the axis has size {}",
            self.sizes,
            shape[self.axis]
        );
        Ok(())
    }
}

impl Op for Split {
    op_common!("Split");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        let x = one_input(inputs)?;
        self.check(&x.shape)?;
        Ok(self
            .sizes
            .iter()
            .map(|&s| {
                let mut shape = x.shape.clone();
                shape[self.axis] = s;
                TensorType::new(x.dtype, shape)
            })
            .collect())
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let x = inputs[0];
        self.check(x.shape())?;
        let mut off = 0;
        let mut outs = Vec::with_capacity(self.sizes.len());
        for &s in &self.sizes {
            let sl = NdSlice::from(off..off + s);
            outs.push(map_same!(x, a => standard(a.slice_axis(Axis(self.axis), sl))));
            off += s;
        }
        Ok(outs)
    }
}

/// `Expand`: broadcasts the input with a target shape (bidirectionally, as numpy).
#[derive(Clone, Debug)]
pub struct Expand {
    /// The target shape given by the model.
    pub shape: Vec<usize>,
}

impl Op for Expand {
    op_common!("Expand");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        let x = one_input(inputs)?;
        Ok(vec![TensorType::new(x.dtype, broadcast_shapes(&x.shape, &self.shape)?)])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let x = inputs[0];
        let out = broadcast_shapes(x.shape(), &self.shape)?;
        TensorType::new(x.dtype(), out.clone()).checked_len()?;
        let sh = IxDyn(&out);
        let y = map_same!(x, a => match a.broadcast(sh.clone()) {
            Some(v) => standard(v),
            None => bail!("cannot expand {:?} to {:?}", a.shape(), out),
        });
        Ok(vec![y])
    }
}

/// `Tile`: repeats the input `repeats[i]` times along each axis.
#[derive(Clone, Debug)]
pub struct Tile {
    /// Repetitions per axis.
    pub repeats: Vec<usize>,
}

impl Tile {
    fn out_shape(&self, shape: &[usize]) -> Result<Vec<usize>> {
        ensure!(
            self.repeats.len() == shape.len(),
            "repeats {:?} has {} entries, the input has rank {}",
            self.repeats,
            self.repeats.len(),
            shape.len()
        );
        Ok(shape.iter().zip(&self.repeats).map(|(d, r)| d * r).collect())
    }
}

fn tile_typed<T: Clone>(a: &ArrayD<T>, repeats: &[usize], out: &[usize]) -> Result<ArrayD<T>> {
    if out.contains(&0) {
        return ArrayD::from_shape_vec(IxDyn(out), vec![]).map_err(|e| crate::Error::Invalid(e.to_string()));
    }
    let mut cur = a.clone();
    for (ax, &r) in repeats.iter().enumerate() {
        if r > 1 {
            let views = vec![cur.view(); r];
            cur = concatenate(Axis(ax), &views).map_err(|e| crate::Error::Invalid(e.to_string()))?;
        }
    }
    Ok(cur)
}

impl Op for Tile {
    op_common!("Tile");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        let x = one_input(inputs)?;
        Ok(vec![TensorType::new(x.dtype, self.out_shape(&x.shape)?)])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let x = inputs[0];
        let out = self.out_shape(x.shape())?;
        TensorType::new(x.dtype(), out.clone()).checked_len()?;
        Ok(vec![map_same!(x, a => tile_typed(a, &self.repeats, &out)?)])
    }
}

/// `Trilu`: keeps the upper (`j − i ≥ k`) or lower (`j − i ≤ k`) triangle of the
/// last two dims and zeroes the rest.
#[derive(Clone, Debug)]
pub struct Trilu {
    /// Keep the upper triangle (else the lower).
    pub upper: bool,
    /// Diagonal offset.
    pub k: i64,
}

fn trilu_typed<T: Clone + Default>(a: &ArrayD<T>, upper: bool, k: i64) -> ArrayD<T> {
    let mut out = standard(a.view());
    let sh = out.shape().to_vec();
    let (rows, cols) = (sh[sh.len() - 2], sh[sh.len() - 1]);
    if let Some(s) = out.as_slice_mut() {
        for (idx, v) in s.iter_mut().enumerate() {
            let (i, j) = (((idx / cols.max(1)) % rows.max(1)) as i64, (idx % cols.max(1)) as i64);
            let keep = if upper { j - i >= k } else { j - i <= k };
            if !keep {
                *v = T::default();
            }
        }
    }
    out
}

impl Op for Trilu {
    op_common!("Trilu");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        let x = one_input(inputs)?;
        ensure!(x.shape.len() >= 2, "input must have rank >= 2, got {:?}", x.shape);
        Ok(vec![x.clone()])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let x = inputs[0];
        ensure!(x.shape().len() >= 2, "input must have rank >= 2, got {:?}", x.shape());
        Ok(vec![map_same!(x, a => trilu_typed(a, self.upper, self.k))])
    }
}

/// A constant (no inputs). Translators use it for Shape, Size, ConstantOfShape,
/// Range and anything else that is fully static.
#[derive(Clone, Debug)]
pub struct Const {
    /// The value.
    pub value: Tensor,
}

impl Op for Const {
    op_common!("Const");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        ensure!(inputs.is_empty(), "expects no inputs, got {}", inputs.len());
        Ok(vec![self.value.ty()])
    }

    fn eval(&self, _inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        Ok(vec![self.value.clone()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i(shape: &[usize], v: &[i64]) -> Tensor {
        Tensor::from_vec(shape, v.to_vec()).unwrap()
    }
    fn iota(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor::from_vec(shape, (0..n as i64).collect::<Vec<_>>()).unwrap()
    }
    fn run_all(op: &dyn Op, ts: &[&Tensor], consts: bool) -> Result<Vec<Tensor>> {
        let tys: Vec<TensorType> = ts.iter().map(|t| t.ty()).collect();
        let fs: Vec<InputFact> =
            tys.iter().zip(ts).map(|(ty, t)| InputFact { ty, value: consts.then_some(*t) }).collect();
        let out_ty = op.infer(&fs)?;
        let out = op.eval(ts)?;
        assert_eq!(out.iter().map(|t| t.ty()).collect::<Vec<_>>(), out_ty);
        Ok(out)
    }
    fn run(op: &dyn Op, ts: &[&Tensor]) -> Result<Tensor> {
        Ok(run_all(op, ts, false)?.remove(0))
    }

    #[test]
    fn reshape_and_errors() {
        let x = iota(&[2, 3]);
        let y = run(&Reshape { shape: vec![3, 2], label: "Flatten" }, &[&x]).unwrap();
        assert_eq!((y.shape().to_vec(), y.to_i64_vec()), (vec![3, 2], (0..6).collect()));
        assert_eq!(Reshape { shape: vec![], label: "Squeeze" }.name(), "Squeeze");
        let e = run(&Reshape { shape: vec![4, 2], label: "Reshape" }, &[&x]).unwrap_err();
        assert!(e.to_string().contains("cannot reshape 6 elements"), "{e}");
        assert_eq!(resolve_reshape(&[2, 3, 4], &[0, -1], false).unwrap(), vec![2, 12]);
        assert!(resolve_reshape(&[2, 0], &[0, -1], true).is_err());
        assert_eq!(resolve_reshape(&[2, 3], &[-1], false).unwrap(), vec![6]);
        assert!(resolve_reshape(&[2, 3], &[-1, -1], false).is_err());
        assert!(resolve_reshape(&[2, 3], &[4, -1], false).is_err());
    }

    #[test]
    fn transpose_all_dtypes() {
        let x = iota(&[2, 3]);
        let y = run(&Transpose { perm: vec![1, 0] }, &[&x]).unwrap();
        assert_eq!((y.shape().to_vec(), y.to_i64_vec()), (vec![3, 2], vec![0, 3, 1, 4, 2, 5]));
        let xb = x.cast(DType::Bool);
        assert_eq!(run(&Transpose { perm: vec![1, 0] }, &[&xb]).unwrap().dtype(), DType::Bool);
        assert!(run(&Transpose { perm: vec![0, 0] }, &[&x]).is_err());
        assert!(run(&Transpose { perm: vec![0] }, &[&x]).is_err());
    }

    #[test]
    fn concat_with_empty_operand() {
        let a = i(&[2], &[1, 2]);
        let e = i(&[0], &[]);
        let b = i(&[1], &[3]);
        let y = run(&Concat { axis: 0 }, &[&a, &e, &b]).unwrap();
        assert_eq!(y.to_i64_vec(), vec![1, 2, 3]);
        // empty operand of a different rank is ignored
        let m = iota(&[2, 2]);
        let e2 = i(&[0], &[]);
        let y = run(&Concat { axis: 1 }, &[&e2, &m, &m]).unwrap();
        assert_eq!((y.shape().to_vec(), y.to_i64_vec()), (vec![2, 4], vec![0, 1, 0, 1, 2, 3, 2, 3]));
        assert!(run(&Concat { axis: 0 }, &[&m, &a]).is_err());
        let f = Tensor::from_vec(&[1], vec![1f32]).unwrap();
        assert!(run(&Concat { axis: 0 }, &[&b, &f]).is_err());
    }

    #[test]
    fn slice_negative_step() {
        let x = iota(&[2, 5]);
        let (s, e) = resolve_slice(-1, i64::MIN, -2, 5).unwrap();
        assert_eq!((s, e), (4, -1));
        let op = Slice { starts: vec![0, s], ends: vec![2, e], steps: vec![1, -2] };
        let y = run(&op, &[&x]).unwrap();
        assert_eq!((y.shape().to_vec(), y.to_i64_vec()), (vec![2, 3], vec![4, 2, 0, 9, 7, 5]));
        // ONNX's INT_MIN/INT_MAX ends and a reversed row axis
        assert_eq!(resolve_slice(1, i64::MAX, -1, 2).unwrap(), (1, 1));
        let (s0, e0) = resolve_slice(1, i64::MIN, -1, 2).unwrap();
        let (s1, e1) = resolve_slice(1, i64::MAX, 2, 5).unwrap();
        let op = Slice { starts: vec![s0, s1], ends: vec![e0, e1], steps: vec![-1, 2] };
        let y = run(&op, &[&x]).unwrap();
        assert_eq!((y.shape().to_vec(), y.to_i64_vec()), (vec![2, 2], vec![6, 8, 1, 3]));
        // empty result and out-of-range rejection
        let op = Slice { starts: vec![0, 3], ends: vec![2, 1], steps: vec![1, 1] };
        assert_eq!(run(&op, &[&x]).unwrap().shape(), &[2, 0]);
        let op = Slice { starts: vec![0, 0], ends: vec![3, 5], steps: vec![1, 1] };
        assert!(run(&op, &[&x]).is_err());
    }

    #[test]
    fn gather_negative_and_out_of_range() {
        let x = iota(&[3, 2]);
        let idx = i(&[2], &[-1, 0]);
        let y = run(&Gather { axis: 0 }, &[&x, &idx]).unwrap();
        assert_eq!((y.shape().to_vec(), y.to_i64_vec()), (vec![2, 2], vec![4, 5, 0, 1]));
        let idx = Tensor::from_vec(&[], vec![1i32]).unwrap();
        let y = run(&Gather { axis: 1 }, &[&x, &idx]).unwrap();
        assert_eq!((y.shape().to_vec(), y.to_i64_vec()), (vec![3], vec![1, 3, 5]));
        let data = iota(&[16]);
        let bad = i(&[1], &[17]);
        // runtime indices: infer passes, eval fails
        let e = run(&Gather { axis: 0 }, &[&data, &bad]).unwrap_err();
        assert_eq!(e.to_string(), "index 17 out of range for axis of size 16");
        // constant indices: infer already fails
        assert!(run_all(&Gather { axis: 0 }, &[&data, &bad], true).is_err());
        let fidx = Tensor::from_vec(&[1], vec![0f32]).unwrap();
        assert!(run(&Gather { axis: 0 }, &[&data, &fidx]).is_err());
    }

    #[test]
    fn split_expand_tile_trilu_const() {
        let x = iota(&[2, 3]);
        let ys = run_all(&Split { axis: 1, sizes: vec![1, 2] }, &[&x], false).unwrap();
        assert_eq!(ys[0].to_i64_vec(), vec![0, 3]);
        assert_eq!((ys[1].shape().to_vec(), ys[1].to_i64_vec()), (vec![2, 2], vec![1, 2, 4, 5]));
        assert!(run(&Split { axis: 1, sizes: vec![1, 1] }, &[&x]).is_err());

        let c = i(&[2, 1], &[7, 8]);
        let y = run(&Expand { shape: vec![1, 3] }, &[&c]).unwrap();
        assert_eq!((y.shape().to_vec(), y.to_i64_vec()), (vec![2, 3], vec![7, 7, 7, 8, 8, 8]));
        assert!(run(&Expand { shape: vec![3, 3] }, &[&c]).is_err());

        let y = run(&Tile { repeats: vec![2, 2] }, &[&c]).unwrap();
        assert_eq!((y.shape().to_vec(), y.to_i64_vec()), (vec![4, 2], vec![7, 7, 8, 8, 7, 7, 8, 8]));
        assert_eq!(run(&Tile { repeats: vec![0, 2] }, &[&c]).unwrap().shape(), &[0, 2]);

        let m = Tensor::from_vec(&[3, 3], vec![f32::NEG_INFINITY; 9]).unwrap();
        let y = run(&Trilu { upper: true, k: 1 }, &[&m]).unwrap().to_f64_vec();
        let ninf = f64::NEG_INFINITY;
        assert_eq!(y, vec![0., ninf, ninf, 0., 0., ninf, 0., 0., 0.]);
        let y = run(&Trilu { upper: false, k: 0 }, &[&iota(&[2, 2, 2])]).unwrap();
        assert_eq!(y.to_i64_vec(), vec![0, 0, 2, 3, 4, 0, 6, 7]);

        let k = Const { value: i(&[2], &[3, 4]) };
        assert_eq!(run(&k, &[]).unwrap().to_i64_vec(), vec![3, 4]);
    }
}
