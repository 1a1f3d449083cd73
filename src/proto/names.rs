//! The Varlink interface names rsmd speaks. A leaf: every other `proto` module may use it, it uses none of them
//! (the error vocabulary builds error names from them, and the interface text and the method table name them too).
//!
//! # References
//! Varlink "Interface Definition" (interface names are reverse-domain names) and "Service" (`org.varlink.service`).

/// The rsmd interface name.
pub const NTMS_INTERFACE: &str = "io.rsmd.Ntms";

/// The standard service interface every Varlink service implements.
pub const SERVICE_INTERFACE: &str = "org.varlink.service";
