//! Per-thread buffers kept between kernel calls: allocating (and zeroing) megabytes on every call
//! costs page faults and memsets on every training step. Holds no data between calls that any
//! caller may rely on.

use std::cell::RefCell;
use std::thread::LocalKey;

/// One thread-local buffer; each use site declares its own, so a kernel can hold one while the
/// tasks it spawns on the same thread (or the products it calls) use another.
pub(crate) type Buffer = LocalKey<RefCell<Vec<f32>>>;

/// Runs `f` on `len` values of this thread's `buffer`, whose contents are arbitrary.
pub(crate) fn with_buffer<R>(
    buffer: &'static Buffer,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    buffer.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        // Only a kernel running inside another's call on the same thread could find it taken;
        // it gets its own.
        Err(_) => f(&mut vec![0.0; len]),
    })
}
