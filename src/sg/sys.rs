//! The sg driver's ABI: `struct sg_io_hdr` and the constants rsmd uses, from `include/scsi/sg.h` and
//! `include/scsi/scsi_status.h`. Only `#[repr(C)]` items and constants live here.
//!
//! # References
//! Linux `include/scsi/sg.h` (sg version 3 interface), `drivers/scsi/sg.c`.

#![allow(non_camel_case_types)]

use std::ffi::{c_int, c_uchar, c_uint, c_ushort, c_void};
use std::mem::{offset_of, size_of};

/// `struct sg_io_hdr`: one command in the sg v3 interface, for `write()`/`read()` and `ioctl(SG_IO)`.
///
/// Fields marked (i) are inputs, (o) outputs filled in by the driver when the command is read back.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct sg_io_hdr {
    /// (i) `'S'` for the v3 interface.
    pub interface_id: c_int,
    /// (i) One of the `SG_DXFER_*` values.
    pub dxfer_direction: c_int,
    /// (i) Length of the CDB at `cmdp`.
    pub cmd_len: c_uchar,
    /// (i) Capacity of the sense buffer at `sbp`.
    pub mx_sb_len: c_uchar,
    /// (i) 0: `dxferp` is a plain buffer, not an iovec array.
    pub iovec_count: c_ushort,
    /// (i) Bytes to transfer.
    pub dxfer_len: c_uint,
    /// (i) Data buffer (`dxfer_len` bytes), or null.
    pub dxferp: *mut c_void,
    /// (i) The CDB (`cmd_len` bytes).
    pub cmdp: *const c_uchar,
    /// (i) Sense buffer (`mx_sb_len` bytes).
    pub sbp: *mut c_uchar,
    /// (i) Timeout in milliseconds (`u32::MAX`: none).
    pub timeout: c_uint,
    /// (i) `SG_FLAG_*`; 0 is indirect I/O through kernel buffers.
    pub flags: c_uint,
    /// (i->o) Caller's id, echoed back by `read()`.
    pub pack_id: c_int,
    /// (i->o) Caller's pointer, echoed back. rsmd always passes null.
    pub usr_ptr: *mut c_void,
    /// (o) SCSI status byte.
    pub status: c_uchar,
    /// (o) Status shifted right by one and masked (obsolete).
    pub masked_status: c_uchar,
    /// (o) Messaging level data (unused).
    pub msg_status: c_uchar,
    /// (o) Bytes actually written to `sbp`.
    pub sb_len_wr: c_uchar,
    /// (o) Host adapter status (`DID_*`).
    pub host_status: c_ushort,
    /// (o) Driver status (`DRIVER_*`, possibly with [`DRIVER_SENSE`]).
    pub driver_status: c_ushort,
    /// (o) `dxfer_len` minus bytes actually transferred.
    pub resid: c_int,
    /// (o) Time the command took, in milliseconds.
    pub duration: c_uint,
    /// (o) `SG_INFO_*` bits.
    pub info: c_uint,
}

#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(size_of::<sg_io_hdr>() == 88);
    assert!(offset_of!(sg_io_hdr, dxfer_len) == 12);
    assert!(offset_of!(sg_io_hdr, dxferp) == 16);
    assert!(offset_of!(sg_io_hdr, cmdp) == 24);
    assert!(offset_of!(sg_io_hdr, sbp) == 32);
    assert!(offset_of!(sg_io_hdr, timeout) == 40);
    assert!(offset_of!(sg_io_hdr, pack_id) == 48);
    assert!(offset_of!(sg_io_hdr, usr_ptr) == 56);
    assert!(offset_of!(sg_io_hdr, status) == 64);
    assert!(offset_of!(sg_io_hdr, sb_len_wr) == 67);
    assert!(offset_of!(sg_io_hdr, host_status) == 68);
    assert!(offset_of!(sg_io_hdr, driver_status) == 70);
    assert!(offset_of!(sg_io_hdr, resid) == 72);
    assert!(offset_of!(sg_io_hdr, duration) == 76);
    assert!(offset_of!(sg_io_hdr, info) == 80);
};

/// Size of [`sg_io_hdr`], the only length `write()` and `read()` on an sg fd accept for the v3 interface.
pub const SG_IO_HDR_SIZE: usize = size_of::<sg_io_hdr>();

/// `interface_id` of the v3 interface.
pub const SG_INTERFACE_ID_ORIG: c_int = b'S' as c_int;

/// No data phase.
pub const SG_DXFER_NONE: c_int = -1;
/// Data out (to the device).
pub const SG_DXFER_TO_DEV: c_int = -2;
/// Data in (from the device).
pub const SG_DXFER_FROM_DEV: c_int = -3;
/// Data out then in (unused by rsmd).
pub const SG_DXFER_TO_FROM_DEV: c_int = -4;

/// `ioctl`: the blocking form of write-then-read with one [`sg_io_hdr`].
pub const SG_IO: libc::Ioctl = 0x2285;
/// `ioctl`: the driver version as an int (30000 or more for the v3 interface).
pub const SG_GET_VERSION_NUM: libc::Ioctl = 0x2282;
/// `ioctl`: size of the reserved transfer buffer, an int.
pub const SG_GET_RESERVED_SIZE: libc::Ioctl = 0x2272;
/// `ioctl`: request a reserved transfer buffer size, an int.
pub const SG_SET_RESERVED_SIZE: libc::Ioctl = 0x2275;

/// Lowest driver version with the v3 interface.
pub const SG_VERSION_V3: c_int = 30000;
/// Most commands one sg fd queues at once; a `write()` beyond it fails with `EDOM`.
pub const SG_MAX_QUEUE: usize = 16;

/// `info` mask: whether anything went wrong.
pub const SG_INFO_OK_MASK: c_uint = 0x1;
/// `info`: no status, host or driver error.
pub const SG_INFO_OK: c_uint = 0x0;
/// `info`: some status, host or driver error.
pub const SG_INFO_CHECK: c_uint = 0x1;

/// `driver_status` flag: sense data was written to `sbp`.
pub const DRIVER_SENSE: c_ushort = 0x08;
/// `driver_status` mask of the driver byte proper.
pub const DRIVER_MASK: c_ushort = 0x0f;
/// `driver_status`: the command timed out.
pub const DRIVER_TIMEOUT: c_ushort = 0x06;

/// `host_status`: no error.
pub const DID_OK: c_ushort = 0x00;
/// `host_status`: the device could not be reached.
pub const DID_NO_CONNECT: c_ushort = 0x01;
/// `host_status`: the command timed out.
pub const DID_TIME_OUT: c_ushort = 0x03;
