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
//! impl, this asks for alignment only when the plain call would not give it ([`plain_aligns`]).
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// A machine word: every mimalloc block is a whole number of words from a word-aligned start.
const WORD: usize = size_of::<usize>();

/// What every block of more than one word is aligned to. On 64-bit targets mimalloc's
/// `MI_MAX_ALIGN_SIZE` is 16, more than a word, so `MI_ALIGN2W` holds: every size class above
/// one word is a whole number of 16-byte units (`mi_bin` in `page-queue.c` rounds the small
/// ones to two words; the larger ones step in even word counts), and the first block of every
/// page is 16-aligned (`MI_PAGE_MIN_START_BLOCK_ALIGN`). On other targets only a word is
/// relied on.
const CLASS_ALIGN: usize = if WORD == 8 { 16 } else { WORD };

pub struct MiMalloc;

/// Whether `mi_malloc(size)` (and `mi_zalloc`, `mi_realloc`, which take the same size
/// classes) returns a block aligned to `align`.
///
/// A Rust `Layout`'s size need not be a multiple of its alignment (`Layout::from_size_align(52,
/// 16)` is valid), so the size says nothing about the alignment the caller needs; what the
/// plain call gives depends only on mimalloc's size class for `size`: a word always, and
/// [`CLASS_ALIGN`] for any size above one word (the one-word class, sizes 0 to 8, is only
/// word-aligned). This holds for the mimalloc that `libmimalloc-sys` builds (v3, no padding:
/// the `debug` and `secure` features are off); the version is pinned exactly in the root
/// `Cargo.toml` and `tests/alloc.rs` checks it on odd layouts.
#[inline(always)]
fn plain_aligns(align: usize, size: usize) -> bool {
    align <= WORD || (align <= CLASS_ALIGN && size > WORD)
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
// alignment (`plain_aligns` states when the plain calls give it), and is given back to
// mimalloc (`mi_free` takes both kinds).
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
        // SAFETY: `ptr` came from mimalloc. `mi_realloc` either keeps the block (aligned to
        // `layout` already) or moves it into a block of `new_size`'s size class, which has the
        // alignment when `plain_aligns` says so.
        unsafe {
            if plain_aligns(layout.align(), new_size) {
                mi::mi_realloc(ptr.cast(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}
