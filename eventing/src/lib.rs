//! The local eventing runner.
