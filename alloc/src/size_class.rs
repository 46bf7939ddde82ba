//! Size classes for small blocks.
//!
//! 16..=64 B in 8 B steps (the minimum granularity), then eight classes per power of two up to
//! [`MAX_SMALL`]. Inside a power-of-two band `[2^k, 2^(k+1)]` the step is `2^(k-3)`, so the worst
//! internal waste of a class is `step / (2^k + step) = 1/9 ≈ 11.1 %` (≤ 12.5 %) for every class of
//! 72 B and above. Below 64 B the absolute waste is at most 7 B.

/// Largest size served from slabs; anything above goes to the large path.
pub const MAX_SMALL: usize = 32 * 1024;

/// Number of size classes.
pub const NUM_CLASSES: usize = 7 + 9 * 8;

/// Block size of every class, ascending.
pub const CLASS_SIZES: [u32; NUM_CLASSES] = build_sizes();

const fn build_sizes() -> [u32; NUM_CLASSES] {
    let mut out = [0u32; NUM_CLASSES];
    let mut i = 0;
    let mut s = 16u32;
    while s <= 64 {
        out[i] = s;
        i += 1;
        s += 8;
    }
    let mut base = 64u32;
    while i < NUM_CLASSES {
        let step = base / 8;
        let mut j = 1;
        while j <= 8 {
            out[i] = base + step * j;
            i += 1;
            j += 1;
        }
        base *= 2;
    }
    out
}

/// Lookup table for sizes up to 1024 B, indexed by `(size + 7) / 8`.
const SMALL_LOOKUP_MAX: usize = 1024;
static LOOKUP: [u8; SMALL_LOOKUP_MAX / 8 + 1] = build_lookup();

const fn build_lookup() -> [u8; SMALL_LOOKUP_MAX / 8 + 1] {
    let mut out = [0u8; SMALL_LOOKUP_MAX / 8 + 1];
    let mut idx = 0;
    while idx <= SMALL_LOOKUP_MAX / 8 {
        let size = idx * 8;
        let mut c = 0;
        while (CLASS_SIZES[c] as usize) < size {
            c += 1;
        }
        out[idx] = c as u8;
        idx += 1;
    }
    out
}

/// Class index for a request of `size` bytes (`1..=MAX_SMALL`). Sizes of 0 map to class 0.
///
/// Cost: one table load below 1 KiB, a leading-zero count above. Callers guarantee
/// `size <= MAX_SMALL`; larger sizes are a logic error (checked in debug builds).
#[inline]
pub fn class_of(size: usize) -> usize {
    debug_assert!(size <= MAX_SMALL);
    if size <= SMALL_LOOKUP_MAX {
        return LOOKUP[size.div_ceil(8)] as usize;
    }
    // band k: 2^k < size <= 2^(k+1); step = 2^(k-3)
    let k = (usize::BITS - 1 - (size - 1).leading_zeros()) as usize; // floor(log2(size-1))
    let step_shift = k - 3;
    let within = (size - 1 - (1 << k)) >> step_shift; // 0..=7
    7 + (k - 6) * 8 + within
}

/// Block size of class `c`.
#[inline]
pub fn class_size(c: usize) -> usize {
    CLASS_SIZES[c] as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_ascend_and_end_at_max_small() {
        for w in CLASS_SIZES.windows(2) {
            assert!(w[0] < w[1], "{w:?}");
        }
        assert_eq!(CLASS_SIZES[NUM_CLASSES - 1] as usize, MAX_SMALL);
        assert_eq!(CLASS_SIZES[0], 16);
    }

    #[test]
    fn every_size_maps_to_smallest_fitting_class() {
        for size in 0..=MAX_SMALL {
            let c = class_of(size);
            assert!(class_size(c) >= size, "size {size} class {c}");
            if c > 0 {
                assert!(
                    class_size(c - 1) < size,
                    "size {size} not smallest class {c}"
                );
            }
        }
    }

    #[test]
    fn waste_is_at_most_one_eighth_from_72_bytes() {
        for c in 1..NUM_CLASSES {
            let size = class_size(c);
            if size < 72 {
                assert!(size - class_size(c - 1) <= 8);
                continue;
            }
            // worst request in this class is prev + 1
            let worst = size - (class_size(c - 1) + 1);
            assert!(worst * 8 <= size, "class {size} waste {worst}");
        }
    }

    #[test]
    fn aligned_requests_land_in_aligned_classes() {
        let mut align = 8;
        while align <= 4096 {
            let mut size = align;
            while size <= MAX_SMALL {
                let c = class_size(class_of(size));
                assert_eq!(c % align, 0, "size {size} align {align} class {c}");
                size += align;
            }
            align *= 2;
        }
    }
}
