//! Deterministic simulations of the broker on vlib, without a loop.
