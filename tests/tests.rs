//! The integration test binary: the real `rsmd` and `rsm` against vlib, and (in `vmlab`) against a real kernel sg
//! stack inside a VM, and (in `vmsd`) installed by the README under a real systemd and udevd. One binary, many
//! modules (each a `mod` here).

mod cli;
mod daemon;
mod hotplug;
mod mounts;
mod protocol;
mod remote;
mod units;
mod util;
mod vmlab;
mod vmsd;
