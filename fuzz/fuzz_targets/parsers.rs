//! Feeds arbitrary bytes to every SCSI response parser. Run: `cargo +nightly fuzz run parsers` (or, on stable,
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run parsers`) from the repository root.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rsmd::fuzzing::parsers(data);
});
