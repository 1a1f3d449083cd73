//! Pure T10 knowledge: CDB builders, bounds-checked parsers, sense decoding and the sense→action table.
//! No I/O, no clock, no unsafe.
