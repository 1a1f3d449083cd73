//! The event loop: listeners, clients, sessions, devices, timers, signals, sd_notify, uevents. The only module that
//! touches mio, sockets, signals or the clock.

pub mod notify;
pub mod objects;
pub mod session;
pub mod start;
