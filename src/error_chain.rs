//! The one way rsmd prints an error: its message and every source's, on one line.
//!
//! Error messages never repeat their source (house rule 6), so the chain is printed exactly once, at the edge:
//! `main`, the one-shot device tools, and the wire messages of failed jobs.

/// `e` and its sources, joined with ": " (`Cannot open the device: No such file or directory`).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("Cannot write the map")]
        Persist(#[source] Middle),
        #[error("Nothing below")]
        Leaf,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("Rename failed")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn joins_every_source_once_in_order() {
        let e = Outer::Persist(Middle(std::io::Error::from(std::io::ErrorKind::PermissionDenied)));
        assert_eq!(error_chain(&e), "Cannot write the map: Rename failed: permission denied");
        assert_eq!(error_chain(&Outer::Leaf), "Nothing below");
    }
}
