//! Socket server (placeholder, filled in below).
