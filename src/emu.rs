//! A [`crate::transport::Transport`] over vlib's socket protocol (tools/vlib/README.md).
