//! Feeds arbitrary bytes to every SCSI response parser. Run: `cargo +nightly fuzz run parsers` (or, on stable,
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run parsers`) from the repository root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rsmd::scsi::{action, element, inquiry, mode, sense, tape};

fuzz_target!(|data: &[u8]| {
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
});
