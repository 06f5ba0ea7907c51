//! The global allocator: mimalloc, called the way its fast paths expect.
//!
//! Request handling allocates many small, short-lived objects on every core; mimalloc's
//! per-thread heaps serve them with far less contention than the system allocator.
//!
//! The `mimalloc` crate passes every allocation to `mi_malloc_aligned`, even at the alignment
//! every block has anyway. mimalloc 3 takes its slow, over-allocating path for such a call
//! once the size is above 1 KiB and not a power of two — a boxed request future, say — and
//! marks the page as holding interior pointers, which slows its frees too: about 1,000
//! instructions of a 21,000-instruction `/health`. Like the system allocator's own `GlobalAlloc`
//! impl, this asks for alignment only when the plain call would not give it.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// What every mimalloc block of at least this size is aligned to (its `MI_MAX_ALIGN_SIZE`;
/// smaller blocks are word-aligned).
const GUARANTEED_ALIGN: usize = 16;

pub struct MiMalloc;

/// Whether the plain calls give alignment `align` to a block of `size` bytes. Rust sizes are
/// multiples of their alignment, so a block of `size >= align` bytes is aligned to
/// `min(align, 16)` at least.
#[inline(always)]
fn plain_aligns(align: usize, size: usize) -> bool {
    align <= GUARANTEED_ALIGN && align <= size
}

type Plain = unsafe extern "C" fn(usize) -> *mut c_void;
type Aligned = unsafe extern "C" fn(usize, usize) -> *mut c_void;

/// A block for `layout` from `plain` where it gives the alignment, from `aligned` otherwise.
#[inline(always)]
fn allocate(layout: Layout, plain: Plain, aligned: Aligned) -> *mut u8 {
    // SAFETY: mimalloc's allocation functions have no preconditions.
    unsafe {
        if plain_aligns(layout.align(), layout.size()) {
            plain(layout.size()).cast()
        } else {
            aligned(layout.size(), layout.align()).cast()
        }
    }
}

// SAFETY: every pointer handed out comes from mimalloc with at least the layout's size and
// alignment (`plain_aligns`), and is given back to mimalloc (`mi_free` takes both kinds).
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        allocate(layout, mi::mi_malloc, mi::mi_malloc_aligned)
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        allocate(layout, mi::mi_zalloc, mi::mi_zalloc_aligned)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator, so from mimalloc.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from mimalloc; the new block keeps `layout`'s alignment, which
        // the plain call gives when it would for `new_size` too.
        unsafe {
            if plain_aligns(layout.align(), new_size) {
                mi::mi_realloc(ptr.cast(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}
