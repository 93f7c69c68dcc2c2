//! The notification function.
