//! Feeds arbitrary bytes to the protocol's decoding, as a client's socket would: NUL framing (split at an arbitrary
//! point, so partial frames are exercised), the Varlink envelope, and every method's parameters. Each parsed method
//! must also survive its round trip through `to_call`. Run: `cargo +nightly fuzz run protocol fuzz/seeds/protocol`
//! from the repository root (the seeds are valid calls: a NUL-framed message after one byte that picks the split).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rsmd::fuzzing::protocol(data);
});
