//! The Linux sg driver (v3 asynchronous `write()`/`read()` interface) and sysfs discovery.
//! The only module with `unsafe` code.
