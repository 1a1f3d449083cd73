//! Tests against the real kernel sg driver, run inside vmlab (`RSMD_VMLAB=1`); elsewhere they skip.
