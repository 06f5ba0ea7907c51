//! The server's global allocator (`nexus::alloc`), installed here as this test binary's:
//! every layout gets a block of its size and alignment, also layouts whose size is not a
//! multiple of their alignment, and `realloc` keeps both the alignment and the content.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout};

#[global_allocator]
static ALLOCATOR: nexus::alloc::MiMalloc = nexus::alloc::MiMalloc;

/// Layouts chosen around mimalloc's size classes: sizes below, at and above one word, 16
/// bytes, the two-word rounding of small classes, a page, and the large classes.
fn layouts() -> Vec<Layout> {
    let mut layouts = Vec::new();
    for (size, align) in [
        (52, 16),
        (1, 8),
        (1, 16),
        (3, 4),
        (7, 8),
        (8, 16),
        (9, 16),
        (24, 16),
        (40, 16),
        (56, 16),
        (4097, 32),
        (1, 1),
        (2, 2),
        (100, 64),
        (1000, 128),
        (1500, 16),
        (5000, 4096),
        (20_000, 16),
        (200_000, 16),
        (3_000_000, 16),
        (3_000_000, 8192),
    ] {
        layouts.push(Layout::from_size_align(size, align).unwrap());
    }
    for align in [1, 2, 4, 8, 16, 32, 64] {
        for size in 1..=130 {
            layouts.push(Layout::from_size_align(size, align).unwrap());
        }
    }
    layouts
}

fn assert_aligned(ptr: *mut u8, layout: Layout, what: &str) {
    assert!(!ptr.is_null(), "{what}: no block for {layout:?}");
    assert_eq!(ptr as usize % layout.align(), 0, "{what}: {ptr:p} not aligned for {layout:?}");
}

/// Many blocks of each layout at once, so that they come from different places in a page and
/// from more than one page: one aligned block could be luck.
const BLOCKS: usize = 64;

#[test]
fn alloc_and_alloc_zeroed_align_every_layout() {
    for layout in layouts() {
        let mut blocks = Vec::with_capacity(BLOCKS * 2);
        for i in 0..BLOCKS {
            // SAFETY: every layout has a non-zero size.
            let ptr = unsafe { ALLOCATOR.alloc(layout) };
            assert_aligned(ptr, layout, "alloc");
            // SAFETY: the block holds `layout.size()` bytes.
            unsafe { ptr.write_bytes(i as u8, layout.size()) };
            blocks.push(ptr);
            // SAFETY: as above.
            let zeroed = unsafe { ALLOCATOR.alloc_zeroed(layout) };
            assert_aligned(zeroed, layout, "alloc_zeroed");
            // SAFETY: the block holds `layout.size()` initialised bytes.
            let bytes = unsafe { std::slice::from_raw_parts(zeroed, layout.size()) };
            assert!(bytes.iter().all(|&b| b == 0), "alloc_zeroed: {layout:?} not zeroed");
            blocks.push(zeroed);
        }
        for ptr in blocks {
            // SAFETY: each came from `ALLOCATOR` with `layout`.
            unsafe { ALLOCATOR.dealloc(ptr, layout) };
        }
    }
}

#[test]
fn realloc_keeps_the_alignment_and_the_content() {
    // Growing and shrinking across the one-word class, the small classes, a page and the
    // large classes; each step checks the bytes the two sizes share.
    let sizes = [1usize, 9, 52, 8, 4097, 3, 64, 200_000, 17, 3_000_000, 5, 1];
    for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
        for _ in 0..8 {
            let mut layout = Layout::from_size_align(sizes[0], align).unwrap();
            // SAFETY: non-zero size.
            let mut ptr = unsafe { ALLOCATOR.alloc(layout) };
            assert_aligned(ptr, layout, "alloc");
            fill(ptr, layout.size());
            for &size in &sizes[1..] {
                // SAFETY: `ptr` came from `ALLOCATOR` with `layout`; `size` is non-zero and
                // does not overflow when rounded up to `align`.
                let grown = unsafe { ALLOCATOR.realloc(ptr, layout, size) };
                let new_layout = Layout::from_size_align(size, align).unwrap();
                assert_aligned(grown, new_layout, "realloc");
                check(grown, layout.size().min(size));
                fill(grown, size);
                ptr = grown;
                layout = new_layout;
            }
            // SAFETY: `ptr` came from `ALLOCATOR` with `layout`.
            unsafe { ALLOCATOR.dealloc(ptr, layout) };
        }
    }
}

/// Writes a pattern that tells each offset apart.
fn fill(ptr: *mut u8, len: usize) {
    for i in 0..len {
        // SAFETY: the block holds `len` bytes.
        unsafe { ptr.add(i).write((i % 251) as u8) };
    }
}

fn check(ptr: *mut u8, len: usize) {
    for i in 0..len {
        // SAFETY: the block holds at least `len` initialised bytes.
        let b = unsafe { ptr.add(i).read() };
        assert_eq!(b, (i % 251) as u8, "realloc lost byte {i}");
    }
}

/// Standard collections through the allocator: the layouts Rust itself asks for.
#[test]
fn ordinary_collections_work() {
    let mut v: Vec<u128> = Vec::new();
    for i in 0..10_000u128 {
        v.push(i);
        assert_eq!(v.as_ptr() as usize % std::mem::align_of::<u128>(), 0);
    }
    v.truncate(3);
    v.shrink_to_fit();
    assert_eq!(v, [0, 1, 2]);
    let s: String = (0..1000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    assert_eq!(s.len(), 1000);
}
