//! Pure T10 knowledge: CDB builders, bounds-checked parsers, sense decoding and the sense→action table.
//! No I/O, no clock, no unsafe.
//!
//! - [`cdb`]: one builder per command (SPC-4, SMC-3, SSC-4), returning a [`cdb::Cdb`].
//! - [`reader`]: the bounds-checked [`reader::Reader`] every parser uses; [`reader::ParseError`].
//! - [`inquiry`], [`mode`], [`element`], [`tape`]: response parsers.
//! - [`sense`]: fixed and descriptor sense; [`asc`]: named ASC/ASCQ pairs; [`action`]: what to do about a sense.

pub mod action;
pub mod asc;
pub mod cdb;
pub mod element;
pub mod inquiry;
pub mod mode;
pub mod opcode;
pub mod reader;
pub mod sense;
pub mod tape;

#[cfg(test)]
mod cross_tests;
#[cfg(test)]
mod proptests;

pub use reader::ParseError;
