//! Deterministic simulation of Library against vlib (added when vlib lands).
