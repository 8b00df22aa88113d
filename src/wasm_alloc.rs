//! The allocator of the WebAssembly build: power-of-two size classes with a
//! free list each, carved from memory that `memory.grow` hands out.
//!
//! Why not the default (dlmalloc): it is 7 KB of the wasm, a sixth of the
//! package's budget. The client's allocations are few and short-lived
//! (frames, event payloads, a queue of actions), so classes that round up to
//! a power of two and never coalesce waste little, and the whole allocator
//! is a few hundred bytes. wasm32 in the browser is single-threaded.
//!
//! Invariant: a block of class `k` (2^k bytes) starts at an address that is a
//! multiple of `min(2^k, PAGE)`, so any request whose alignment is at most
//! its rounded size (all Rust layouts up to 64 KiB alignment) is met.
#![allow(unsafe_code)]

use core::alloc::{GlobalAlloc, Layout};
use core::arch::wasm32;
use core::cell::UnsafeCell;
use core::ptr;

const PAGE: usize = 65536;
/// Smallest block: 16 bytes (a free block stores the next pointer in place).
const MIN_CLASS: u32 = 4;
const CLASSES: usize = 32;

struct Heap {
    /// Head of the free list of each class (0 = empty).
    free: [usize; CLASSES],
    /// Next unused address and the end of the memory we own.
    top: usize,
    end: usize,
}

/// The global allocator of the wasm build.
pub struct Allocator(UnsafeCell<Heap>);

// SAFETY: wasm32-unknown-unknown without the atomics feature has one thread.
unsafe impl Sync for Allocator {}

#[global_allocator]
static ALLOCATOR: Allocator = Allocator(UnsafeCell::new(Heap {
    free: [0; CLASSES],
    top: 0,
    end: 0,
}));

/// The class of a layout: the log2 of its size and alignment, rounded up.
fn class(layout: &Layout) -> usize {
    let n = layout.size().max(layout.align()).max(1 << MIN_CLASS);
    (usize::BITS - (n - 1).leading_zeros()) as usize
}

impl Heap {
    fn push(&mut self, k: usize, at: usize) {
        // SAFETY: `at` is a block of class k >= MIN_CLASS that nobody uses.
        unsafe { ptr::write(at as *mut usize, self.free[k]) };
        self.free[k] = at;
    }

    fn alloc(&mut self, k: usize) -> usize {
        if k >= CLASSES {
            return 0;
        }
        let head = self.free[k];
        if head != 0 {
            // SAFETY: free-list blocks hold the next pointer.
            self.free[k] = unsafe { ptr::read(head as *const usize) };
            return head;
        }
        let size = 1usize << k;
        let align = size.min(PAGE);
        // Hand the gap up to the alignment to the smaller classes: each
        // piece is the lowest set bit of `top`, so it is aligned to its size.
        while self.top & (align - 1) != 0 && self.top < self.end {
            let piece = self.top & self.top.wrapping_neg();
            self.push(piece.trailing_zeros() as usize, self.top);
            self.top += piece;
        }
        if self.top & (align - 1) != 0 || self.end - self.top < size {
            let need = size + align;
            let pages = need.div_ceil(PAGE);
            let old = wasm32::memory_grow(0, pages);
            if old == usize::MAX {
                return 0;
            }
            let start = old * PAGE;
            if start != self.end {
                // First use (or memory grown by someone else): start afresh there.
                self.top = start;
            }
            self.end = start + pages * PAGE;
            return self.alloc(k);
        }
        let at = self.top;
        self.top += size;
        at
    }
}

// SAFETY: blocks are disjoint, aligned to their class (see the module docs),
// and at least as large as the layout.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: single-threaded, and no reentrancy (nothing here allocates).
        let heap = unsafe { &mut *self.0.get() };
        heap.alloc(class(&layout)) as *mut u8
    }

    unsafe fn dealloc(&self, at: *mut u8, layout: Layout) {
        // SAFETY: as in `alloc`; `at` came from `alloc` with this layout.
        let heap = unsafe { &mut *self.0.get() };
        heap.push(class(&layout), at as usize);
    }

    unsafe fn realloc(&self, at: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new) = Layout::from_size_align(new_size, layout.align()) else {
            return ptr::null_mut();
        };
        if class(&new) == class(&layout) {
            return at;
        }
        // SAFETY: the caller's contract for `realloc` covers these calls.
        unsafe {
            let to = self.alloc(new);
            if !to.is_null() {
                ptr::copy_nonoverlapping(at, to, layout.size().min(new_size));
                self.dealloc(at, layout);
            }
            to
        }
    }
}
