//! The integration test binary: the real `rsmd` and `rsm` against vlib, and (in `vmlab`) against a real kernel sg
//! stack inside a VM. One binary, many modules (each a `mod` here).

mod daemon;
mod hotplug;
mod mounts;
mod protocol;
mod units;
mod util;
mod vmlab;
