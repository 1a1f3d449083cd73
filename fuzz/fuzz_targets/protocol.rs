//! Feeds arbitrary bytes to the protocol's decoding, as a client's socket would: NUL framing (split at an arbitrary
//! point, so partial frames are exercised), the Varlink envelope, and every method's parameters. Each parsed method
//! must also survive its round trip through `to_call`. Run: `cargo +nightly fuzz run protocol fuzz/seeds/protocol`
//! from the repository root (the seeds are valid calls: a NUL-framed message after one byte that picks the split).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rsmd::proto::{Call, FrameDecoder, Method, Response};

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let mut decoder = FrameDecoder::with_limit(1 << 16);
    decoder.extend(&data[..split]);
    decoder.extend(&data[split..]);
    while let Some(frame) = decoder.next_message() {
        let Ok(message) = frame else { break };
        let _ = Response::parse(&message);
        let Ok(call) = Call::parse(&message) else { continue };
        if let Ok(method) = Method::parse(&call) {
            let again = method.to_call();
            assert_eq!(Method::parse(&again).as_ref(), Ok(&method), "round trip of {message}");
        }
    }
});
