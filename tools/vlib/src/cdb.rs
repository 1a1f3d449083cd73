//! CDB builders (for tests and clients) and the MODE SENSE framing shared by changer and drives.

use crate::sense::{self, Sense};

/// TEST UNIT READY.
pub fn test_unit_ready() -> Vec<u8> {
    vec![0x00, 0, 0, 0, 0, 0]
}

/// REQUEST SENSE with allocation length `alloc`.
pub fn request_sense(alloc: u8) -> Vec<u8> {
    vec![0x03, 0, 0, 0, alloc, 0]
}

/// INQUIRY: `page` = None for standard data, Some(code) for a VPD page.
pub fn inquiry(page: Option<u8>, alloc: u16) -> Vec<u8> {
    let a = alloc.to_be_bytes();
    match page {
        None => vec![0x12, 0, 0, a[0], a[1], 0],
        Some(p) => vec![0x12, 1, p, a[0], a[1], 0],
    }
}

/// MODE SENSE(6) of `page` (page control 0: current values), optionally with DBD.
pub fn mode_sense6(page: u8, dbd: bool, alloc: u8) -> Vec<u8> {
    vec![0x1a, if dbd { 0x08 } else { 0 }, page & 0x3f, 0, alloc, 0]
}

/// MODE SENSE(10) of `page` (page control 0), optionally with DBD.
pub fn mode_sense10(page: u8, dbd: bool, alloc: u16) -> Vec<u8> {
    let a = alloc.to_be_bytes();
    vec![0x5a, if dbd { 0x08 } else { 0 }, page & 0x3f, 0, 0, 0, 0, a[0], a[1], 0]
}

/// READ ELEMENT STATUS: element type code (0 = all), start address, number of elements, VOLTAG,
/// CURDATA, DVCID, allocation length (24 bits).
#[allow(clippy::fn_params_excessive_bools)]
pub fn read_element_status(
    type_code: u8,
    start: u16,
    count: u16,
    voltag: bool,
    curdata: bool,
    dvcid: bool,
    alloc: u32,
) -> Vec<u8> {
    let s = start.to_be_bytes();
    let c = count.to_be_bytes();
    let a = alloc.to_be_bytes();
    vec![
        0xb8,
        (if voltag { 0x10 } else { 0 }) | (type_code & 0x0f),
        s[0],
        s[1],
        c[0],
        c[1],
        (if curdata { 0x02 } else { 0 }) | u8::from(dvcid),
        a[1],
        a[2],
        a[3],
        0,
        0,
    ]
}

/// MOVE MEDIUM from `source` to `destination` using transport `transport`.
pub fn move_medium(transport: u16, source: u16, destination: u16) -> Vec<u8> {
    let t = transport.to_be_bytes();
    let s = source.to_be_bytes();
    let d = destination.to_be_bytes();
    vec![0xa5, 0, t[0], t[1], s[0], s[1], d[0], d[1], 0, 0, 0, 0]
}

/// EXCHANGE MEDIUM: `source` → `first`, `first`'s medium → `second`.
pub fn exchange_medium(transport: u16, source: u16, first: u16, second: u16) -> Vec<u8> {
    let t = transport.to_be_bytes();
    let s = source.to_be_bytes();
    let f = first.to_be_bytes();
    let d = second.to_be_bytes();
    vec![0xa6, 0, t[0], t[1], s[0], s[1], f[0], f[1], d[0], d[1], 0, 0]
}

/// POSITION TO ELEMENT.
pub fn position_to_element(transport: u16, destination: u16) -> Vec<u8> {
    let t = transport.to_be_bytes();
    let d = destination.to_be_bytes();
    vec![0x2b, 0, t[0], t[1], d[0], d[1], 0, 0, 0, 0]
}

/// INITIALIZE ELEMENT STATUS (all elements).
pub fn initialize_element_status() -> Vec<u8> {
    vec![0x07, 0, 0, 0, 0, 0]
}

/// INITIALIZE ELEMENT STATUS WITH RANGE over `count` elements from `start`.
pub fn initialize_element_status_range(start: u16, count: u16) -> Vec<u8> {
    let s = start.to_be_bytes();
    let c = count.to_be_bytes();
    vec![0x37, 0x01, s[0], s[1], 0, 0, c[0], c[1], 0, 0]
}

/// PREVENT ALLOW MEDIUM REMOVAL (`prevent` true = prevent).
pub fn prevent_allow(prevent: bool) -> Vec<u8> {
    vec![0x1e, 0, 0, 0, u8::from(prevent), 0]
}

/// LOAD UNLOAD: `load` true = load, false = unload; `immed` returns before the operation finishes.
pub fn load_unload(load: bool, immed: bool) -> Vec<u8> {
    vec![0x1b, u8::from(immed), 0, 0, u8::from(load), 0]
}

/// REWIND.
pub fn rewind() -> Vec<u8> {
    vec![0x01, 0, 0, 0, 0, 0]
}

/// READ POSITION, short form.
pub fn read_position() -> Vec<u8> {
    vec![0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

/// LOG SENSE of `page` (cumulative values, PC 01b).
pub fn log_sense(page: u8, alloc: u16) -> Vec<u8> {
    let a = alloc.to_be_bytes();
    vec![0x4d, 0, 0x40 | (page & 0x3f), 0, 0, 0, 0, a[0], a[1], 0]
}

/// Parsed MODE SENSE(6)/(10) request.
#[derive(Debug)]
pub(crate) struct ModeRequest {
    pub(crate) ten: bool,
    pub(crate) dbd: bool,
    pub(crate) page: u8,
    pub(crate) alloc: usize,
}

/// Parses a MODE SENSE(6)/(10) CDB; rejects saved values (05/39/00) and subpages.
pub(crate) fn mode_request(cdb: &[u8]) -> Result<ModeRequest, Sense> {
    let ten = cdb[0] == 0x5a;
    if cdb.len() < if ten { 10 } else { 6 } {
        return Err(Sense::invalid_field(0, None));
    }
    if cdb[2] >> 6 == 3 {
        return Err(sense::SAVING_NOT_SUPPORTED);
    }
    if cdb[3] != 0 && cdb[3] != 0xff {
        return Err(Sense::invalid_field(3, Some(7)));
    }
    Ok(ModeRequest {
        ten,
        dbd: cdb[1] & 0x08 != 0,
        page: cdb[2] & 0x3f,
        alloc: if ten { usize::from(u16::from_be_bytes([cdb[7], cdb[8]])) } else { usize::from(cdb[4]) },
    })
}

/// Frames mode pages with a MODE SENSE(6) or (10) header and an optional block descriptor.
pub(crate) fn mode_data(req: &ModeRequest, device_specific: u8, block: Option<[u8; 8]>, pages: &[u8]) -> Vec<u8> {
    let block = if req.dbd { None } else { block };
    let bd_len = block.map_or(0u8, |_| 8);
    let mut d =
        if req.ten { vec![0, 0, 0, device_specific, 0, 0, 0, bd_len] } else { vec![0, 0, device_specific, bd_len] };
    if let Some(b) = block {
        d.extend_from_slice(&b);
    }
    d.extend_from_slice(pages);
    if req.ten {
        let n = u16::try_from(d.len() - 2).unwrap_or(u16::MAX).to_be_bytes();
        d[0] = n[0];
        d[1] = n[1];
    } else {
        d[0] = u8::try_from(d.len() - 1).unwrap_or(u8::MAX);
    }
    d.truncate(req.alloc);
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders() {
        assert_eq!(
            read_element_status(4, 500, 4, true, false, true, 0x01_0203),
            vec![0xb8, 0x14, 0x01, 0xf4, 0, 4, 0x01, 0x01, 0x02, 0x03, 0, 0]
        );
        assert_eq!(move_medium(1, 1000, 500), vec![0xa5, 0, 0, 1, 0x03, 0xe8, 0x01, 0xf4, 0, 0, 0, 0]);
        assert_eq!(inquiry(Some(0x80), 255), vec![0x12, 1, 0x80, 0, 255, 0]);
        assert_eq!(mode_sense10(0x1d, true, 300), vec![0x5a, 8, 0x1d, 0, 0, 0, 0, 1, 44, 0]);
    }

    #[test]
    fn mode_header_lengths() {
        let r = mode_request(&mode_sense6(0x3f, false, 255)).unwrap();
        let d = mode_data(&r, 0x10, Some([0x5a, 0, 0, 0, 0, 0, 0, 0]), &[0x0f, 0x01, 0xaa]);
        assert_eq!(d, vec![14, 0, 0x10, 8, 0x5a, 0, 0, 0, 0, 0, 0, 0, 0x0f, 0x01, 0xaa]);
        let r = mode_request(&mode_sense10(0x3f, true, 255)).unwrap();
        let d = mode_data(&r, 0, Some([0; 8]), &[0x1d, 0]);
        assert_eq!(d, vec![0, 8, 0, 0, 0, 0, 0, 0, 0x1d, 0]);
        let mut saved = mode_sense6(0x1d, false, 255);
        saved[2] |= 0xc0;
        assert_eq!(mode_request(&saved).unwrap_err(), sense::SAVING_NOT_SUPPORTED);
    }
}
