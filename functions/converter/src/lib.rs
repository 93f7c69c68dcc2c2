//! The converter function.
