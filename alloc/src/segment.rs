//! Segments: 4 MiB OS mappings aligned to 4 MiB, split into 64 pages of 64 KiB.
//!
//! The first 4 KiB of a segment hold its header and the metadata of all 64 pages, so the owner
//! of any block is found by masking the block address down to 4 MiB (no table: metadata is
//! 4 KiB per 4 MiB = 0.098 %). Page 0 starts after the header and is 4 KiB shorter.
//! Large allocations are mapped with the same alignment and carry a [`crate::large`] header at
//! the same address, told apart by the `kind` word.

use core::ptr;

/// Segment size and alignment.
pub const SEG_SIZE: usize = 4 << 20;
/// Slab page size.
pub const PAGE_SIZE: usize = 64 << 10;
/// Pages per segment.
pub const PAGES_PER_SEG: usize = SEG_SIZE / PAGE_SIZE;
/// Bytes at the start of a segment reserved for the header.
pub const META_SIZE: usize = 4096;

/// `kind` word of a small-block segment.
pub const KIND_SMALL: u32 = 0x534d_4c53;
/// `kind` word of a large mapping.
pub const KIND_LARGE: u32 = 0x4c52_4745;

/// A free block; while queued for a remote free, the head of a batch also carries the batch
/// length and the owning heap.
#[repr(C)]
pub struct Block {
    pub next: *mut Block,
    pub count: u32,
    pub owner: u32,
}

/// Per-page slab state, owned by the segment's heap.
#[repr(C)]
pub struct PageMeta {
    pub free: *mut Block,
    pub bump: usize,
    pub end: usize,
    pub prev: *mut PageMeta,
    pub next: *mut PageMeta,
    pub used: u32,
    pub block_size: u32,
    pub class: u8,
    pub in_list: bool,
    pub assigned: bool,
}

/// Segment header at the segment's base address.
#[repr(C)]
pub struct Segment {
    pub kind: u32,
    pub owner: u32,
    /// Keeps `kind`/`owner` (read by every remote free) off the line the owner writes.
    _pad: [u8; 56],
    pub free_mask: u64,
    pub used_pages: u32,
    pub prev: *mut Segment,
    pub next: *mut Segment,
    pub pages: [PageMeta; PAGES_PER_SEG],
}

const _: () = assert!(core::mem::size_of::<Segment>() <= META_SIZE);
const _: () = assert!(PAGES_PER_SEG == 64);

/// Segment (or large header) containing `p`.
#[inline]
pub fn segment_of(p: *const u8) -> *mut Segment {
    (p as usize & !(SEG_SIZE - 1)) as *mut Segment
}

/// Index of the page containing `p` within its segment.
#[inline]
pub fn page_index(p: *const u8) -> usize {
    (p as usize & (SEG_SIZE - 1)) / PAGE_SIZE
}

/// Page metadata for block `p` of segment `seg`.
///
/// # Safety
/// `seg` must be a live small segment containing `p`.
#[inline]
pub unsafe fn page_of(seg: *mut Segment, p: *const u8) -> *mut PageMeta {
    // SAFETY: caller guarantees `seg` is live; index < 64 by construction.
    unsafe { ptr::addr_of_mut!((*seg).pages[page_index(p)]) }
}

/// Usable byte range `[start, end)` of page `i` of the segment at `base`.
#[inline]
pub fn page_area(base: usize, i: usize) -> (usize, usize) {
    let start = base + i * PAGE_SIZE + if i == 0 { META_SIZE } else { 0 };
    (start, base + (i + 1) * PAGE_SIZE)
}
