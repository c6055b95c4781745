//! Statics that main borrows mutably once: the home of large buffers (a model's arena, its output buffers), so
//! that they live in RAM's `.bss`, are counted by the linker against the board's RAM, and stay off the stack.
//!
//! No `static mut`: the value sits in an [`UnsafeCell`] and a flag, set inside a critical section, makes sure
//! at most one `&'static mut` to it ever exists.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

/// A value in a `static`, handed out as `&'static mut` at most once (see [`singleton!`](crate::singleton)).
pub struct StaticCell<T> {
    taken: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the only access to `value` is through `take`, which hands out one exclusive reference ever; the
// value may then be used from whichever context took it, hence `T: Send`.
unsafe impl<T: Send> Sync for StaticCell<T> {}

impl<T> StaticCell<T> {
    /// A cell holding `value` (a `const` initializer: an all-zero value lands in `.bss`).
    pub const fn new(value: T) -> Self {
        StaticCell { taken: AtomicBool::new(false), value: UnsafeCell::new(value) }
    }

    /// The value, the first time; `None` afterwards.
    // A `&mut` from a `&`: sound because the flag hands it out once (the same shape as `cortex_m::singleton!`).
    #[allow(clippy::mut_from_ref)]
    pub fn take(&'static self) -> Option<&'static mut T> {
        // Load and store (no compare-and-swap: RV32IMC has no atomic read-modify-write) inside a critical section.
        let first = critical_section::with(|_| {
            let taken = self.taken.load(Ordering::Relaxed);
            self.taken.store(true, Ordering::Relaxed);
            !taken
        });
        // SAFETY: `first` is true exactly once for this cell, so this is the only reference to the value.
        first.then(|| unsafe { &mut *self.value.get() })
    }
}

/// `singleton!(Type = init)`: a `&'static mut Type` to a value in a `static` initialized with the constant
/// expression `init`, or `None` when this invocation already ran once.
///
/// ```ignore
/// let buffers = mote_fw::singleton!([i8; 4096] = [0; 4096]).expect("first call");
/// ```
#[macro_export]
macro_rules! singleton {
    ($ty:ty = $init:expr) => {{
        static CELL: $crate::singleton::StaticCell<$ty> = $crate::singleton::StaticCell::new($init);
        CELL.take()
    }};
}
