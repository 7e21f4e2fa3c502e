//! A model's name across runs: a hash of its encoded bytes.

use std::hash::{DefaultHasher, Hasher};

/// The cache key of an encoded model: std's `DefaultHasher` (SipHash-1-3, fixed keys) over its
/// bytes, and their count. A Rust release may change the hash; a stale key only means measuring
/// again.
pub fn cache_key(bytes: &[u8]) -> String {
    let mut hasher = DefaultHasher::new();
    hasher.write(bytes);
    format!("{:016x}-{}", hasher.finish(), bytes.len())
}
