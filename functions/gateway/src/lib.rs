//! The gateway function.
