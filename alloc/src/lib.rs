//! Per-shard allocator (issue 3). Depends on std only.
