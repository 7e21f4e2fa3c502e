//! The `compress` binary, end to end.
