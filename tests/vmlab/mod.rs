//! Real-kernel tests in ../shared/vmlab (written on the devices branch).
