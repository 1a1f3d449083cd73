//! vlib: a virtual tape library (SMC changer + SSC drives), written from the standards.
