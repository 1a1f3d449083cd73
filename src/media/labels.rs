//! Tape label recognisers (placeholder being written).

/// What the first block of a tape says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TapeLabel {
    /// A Bacula volume label (stub).
    Bacula {
        /// Volume name.
        volume: String,
    },
}

impl TapeLabel {
    /// The volume name.
    pub fn volume(&self) -> &str {
        match self {
            TapeLabel::Bacula { volume } => volume,
        }
    }
    /// The format's name.
    pub fn format(&self) -> &'static str {
        "bacula"
    }
}

/// Recognises a first block (stub).
pub fn recognise(_block: &[u8]) -> Option<TapeLabel> {
    None
}
