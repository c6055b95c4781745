//! Integer element types the kernels are generic over.

mod sealed {
    pub trait Sealed {}
}

/// An integer tensor element (`i8`, `u8`, `i16`, `u16`, `i32`) that kernels read or write.
///
/// Sealed: the set of types is fixed so that every value widens losslessly to `i32`.
pub trait IntElem: Copy + sealed::Sealed {
    /// Smallest representable value, widened to `i32`.
    const MIN: i32;
    /// Largest representable value, widened to `i32`.
    const MAX: i32;
    /// Widens the value to `i32` (lossless).
    fn to_i32(self) -> i32;
    /// Converts `v` to `Self`, saturating to `[MIN, MAX]`.
    fn from_i32_sat(v: i32) -> Self;
}

macro_rules! impl_int_elem {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl IntElem for $t {
            const MIN: i32 = <$t>::MIN as i32;
            const MAX: i32 = <$t>::MAX as i32;
            #[inline]
            fn to_i32(self) -> i32 {
                self as i32
            }
            #[inline]
            fn from_i32_sat(v: i32) -> Self {
                // max/min instead of clamp: no assertion path.
                v.max(<Self as IntElem>::MIN).min(<Self as IntElem>::MAX) as $t
            }
        }
    )*};
}

impl_int_elem!(i8, u8, i16, u16, i32);

/// `Ok` when `[lo, hi]` is representable in `T`.
pub(crate) fn check_range<T: IntElem>(lo: i32, hi: i32) -> Result<(), crate::KernelError> {
    if lo >= T::MIN && hi <= T::MAX && lo <= hi {
        Ok(())
    } else {
        Err(crate::KernelError::InvalidParam)
    }
}
