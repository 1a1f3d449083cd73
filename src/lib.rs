//! rsmd: a Removable Storage Manager for Linux.
//!
//! One daemon owns the tape libraries of a backup server and brokers them to many applications through a local
//! Varlink socket, with the semantics of Microsoft's RSM (`ntmsapi.h`). See `docs/ARCHITECTURE.md` for the module
//! map and what each module is independent of.
#![deny(unsafe_code)]

pub mod broker;
pub mod changer;
pub mod client;
pub mod config;
pub mod devices;
pub mod emu;
pub mod error_chain;
#[doc(hidden)]
pub mod fuzzing;
pub mod media;
pub mod model;
pub mod proto;
pub mod scsi;
pub mod server;
#[allow(unsafe_code)]
pub mod sg;
pub mod store;
pub mod transport;

pub use error_chain::error_chain;
