//! Pure T10 knowledge: CDB builders, bounds-checked parsers, sense decoding and the sense→action table.
//! No I/O, no clock, no unsafe.
//!
//! - [`cdb`]: one builder per command (SPC-4, SMC-3, SSC-4), returning a [`cdb::Cdb`].
//! - [`command`]: the [`command::Command`] a transport carries and the SAM [`command::status`] byte.
//! - [`reader`]: the bounds-checked [`reader::Reader`] every parser uses; [`reader::ParseError`].
//! - [`inquiry`], [`mode`], [`element`], [`tape`]: response parsers.
//! - [`sense`]: fixed and descriptor sense; [`asc`]: named ASC/ASCQ pairs; [`action`]: what to do about a sense.

pub mod action;
pub mod asc;
pub mod cdb;
pub mod command;
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

#[cfg(test)]
mod layering {
    /// `scsi` is pure T10: no path (code or doc link) may leave it for another module of the crate.
    #[test]
    fn imports_nothing_of_the_crate() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/scsi");
        // Spelled in two halves so this test does not find itself.
        let needle = concat!("crate", "::");
        let mut offending = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                let mut rest = line;
                while let Some(i) = rest.find(needle) {
                    rest = &rest[i + needle.len()..];
                    if !rest.starts_with("scsi") {
                        offending.push(format!("{}:{}: {line}", path.display(), n + 1));
                    }
                }
            }
        }
        assert!(offending.is_empty(), "scsi reaches out of itself:\n{}", offending.join("\n"));
    }
}
