//! Typed views of one byte arena, for generated code: every tensor of a model lives at a planned byte offset of a
//! single `[u8]` arena whatever its element type, so tensors of different types that are never alive together
//! share bytes. A layer splits the arena around the ranges it writes ([`split`]) and views each range as the
//! element type its kernel takes ([`view`], [`view_mut`]).
//!
//! Alignment: a view of `i16`/`i32` elements needs its first byte at a multiple of the type's size; the generated
//! arena is 16-byte aligned and every planned offset a multiple of 4, so the views of a valid plan always succeed.
//! Nothing here panics: an out-of-range or misaligned request returns `None`.
use bytemuck::Pod;

/// The bytes around `offset..offset + len`: before it, the range, after it (all mutable, for a further split).
pub fn split(bytes: &mut [u8], offset: usize, len: usize) -> Option<(&mut [u8], &mut [u8], &mut [u8])> {
    let (lo, rest) = bytes.split_at_mut_checked(offset)?;
    let (mid, hi) = rest.split_at_mut_checked(len)?;
    Some((lo, mid, hi))
}

/// `len` elements of type `T` starting at byte `offset` of `bytes`.
pub fn view<T: Pod>(bytes: &[u8], offset: usize, len: usize) -> Option<&[T]> {
    let end = offset.checked_add(len.checked_mul(core::mem::size_of::<T>())?)?;
    bytemuck::try_cast_slice(bytes.get(offset..end)?).ok()
}

/// All of `bytes` as elements of type `T` (its length a multiple of the element size).
pub fn view_mut<T: Pod>(bytes: &mut [u8]) -> Option<&mut [T]> {
    bytemuck::try_cast_slice_mut(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C, align(16))]
    struct Aligned([u8; 32]);

    /// Views read and write the arena's bytes as little-endian elements; misaligned, short or out-of-range
    /// requests are refused.
    #[test]
    fn typed_views_of_one_arena() {
        let mut a = Aligned([0; 32]);
        {
            let (lo, mid, hi) = split(&mut a.0, 8, 8).unwrap_or_default();
            assert_eq!((lo.len(), mid.len(), hi.len()), (8, 8, 16));
            let words = view_mut::<i32>(mid).unwrap_or_default();
            words.copy_from_slice(&[-2, 0x0102_0304]);
        }
        assert_eq!(a.0[8..16], [0xfe, 0xff, 0xff, 0xff, 4, 3, 2, 1]);
        assert_eq!(view::<i8>(&a.0, 8, 2), Some(&[-2i8, -1][..]));
        assert_eq!(view::<i16>(&a.0, 12, 2), Some(&[0x0304i16, 0x0102][..]));
        assert_eq!(view::<i32>(&a.0, 9, 1), None, "misaligned");
        assert_eq!(view::<i32>(&a.0, 28, 2), None, "past the end");
        assert_eq!(view::<i32>(&a.0, 0, usize::MAX), None, "overflowing length");
        assert!(view_mut::<i32>(&mut a.0[..6]).is_none(), "not a whole number of elements");
        assert!(split(&mut a.0, 30, 4).is_none());
    }
}
