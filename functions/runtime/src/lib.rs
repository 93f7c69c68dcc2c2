//! Shared runtime.
