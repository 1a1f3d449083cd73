//! The fuzz targets' bodies (`fuzz/fuzz_targets`), here so that the normal test command replays the seeds and the
//! kept corpora through them (a smoke run of seconds) and cargo-fuzz runs exactly the same code.

use crate::proto::{Call, FrameDecoder, Method, Response};
use crate::scsi::{action, element, inquiry, mode, sense, tape};

/// Arbitrary bytes into every SCSI response parser: none may panic, and an element status report never claims
/// more descriptors than its bytes can hold.
pub fn parsers(data: &[u8]) {
    let _ = sense::Sense::parse(data);
    let _ = action::classify(2, data);
    let _ = inquiry::StandardInquiry::parse(data);
    let _ = inquiry::parse_unit_serial(data);
    let _ = inquiry::parse_supported_pages(data);
    let _ = inquiry::parse_device_identification(data);
    let _ = mode::ModeParameters::parse_mode6(data);
    let _ = mode::ModeParameters::parse_mode10(data);
    let _ = mode::ElementAddressAssignment::parse_page(data);
    let _ = mode::DeviceCapabilities::parse_page(data);
    let _ = tape::TapeAlerts::parse(data);
    let _ = tape::Position::parse(data);
    if let Ok(report) = element::ElementStatusReport::parse(data) {
        assert!(report.elements.len() * 12 <= data.len());
    }
}

/// Arbitrary bytes into the protocol's decoding, as a client's socket delivers them: NUL framing split at the
/// point the first byte picks (partial frames), the Varlink envelope, every method's parameters; each parsed method
/// survives its round trip through `to_call`.
pub fn protocol(data: &[u8]) {
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
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every file under `dir` (recursively), when it exists.
    fn files(dir: &Path, out: &mut Vec<Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                files(&p, out);
            } else if let Ok(b) = std::fs::read(&p) {
                out.push(b);
            }
        }
    }

    /// The fuzz smoke run of the normal test command: the seeds and whatever corpora cargo-fuzz kept, each through
    /// both targets, then deterministic mutations of them (byte changes, insertions, truncations).
    #[test]
    fn corpus_replay_and_mutations() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut inputs = Vec::new();
        files(&root.join("seeds"), &mut inputs);
        files(&root.join("corpus"), &mut inputs);
        assert!(inputs.len() >= 10, "the protocol seeds are in the repository");
        for input in &inputs {
            super::parsers(input);
            super::protocol(input);
        }
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let seeds: Vec<Vec<u8>> = inputs.iter().filter(|i| i.len() < 4096).take(200).cloned().collect();
        for round in 0..20_000usize {
            let mut m = seeds[round % seeds.len()].clone();
            for _ in 0..=(next() % 4) {
                let r = next();
                let at = usize::try_from(r >> 32).unwrap_or(0) % (m.len() + 1);
                match r % 4 {
                    0 if at < m.len() => m[at] = r.to_le_bytes()[1],
                    1 => m.insert(at, r.to_le_bytes()[2]),
                    2 => m.truncate(at),
                    _ => m.insert(at, 0),
                }
            }
            super::parsers(&m);
            super::protocol(&m);
        }
        println!("{} inputs replayed, 20,000 mutations", inputs.len());
    }
}
