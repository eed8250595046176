//! A document's type, from what the caller declared and, above all, from its bytes: a PDF
//! begins with `%PDF-`, HTML with a doctype or an `<html>`/`<head>`/`<body>` tag; text that is
//! not UTF-8 is refused; Markdown and plain text are told apart by the declaration, else by
//! Markdown's own marks (ATX headings, fences, lists, links).

use super::DocumentError;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum DocumentKind {
    Pdf,
    Html,
    Markdown,
    Text,
}

impl DocumentKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Pdf => "pdf",
            Self::Html => "html",
            Self::Markdown => "markdown",
            Self::Text => "text",
        }
    }

    /// A declared type: a MIME type (parameters ignored) or a short name.
    fn declared(raw: &str) -> Result<Option<Self>, DocumentError> {
        let base = raw
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        Ok(match base.as_str() {
            "" | "application/octet-stream" => None,
            "pdf" | "application/pdf" => Some(Self::Pdf),
            "html" | "text/html" | "application/xhtml+xml" => Some(Self::Html),
            "markdown" | "md" | "text/markdown" | "text/x-markdown" => Some(Self::Markdown),
            "text" | "txt" | "text/plain" => Some(Self::Text),
            other => {
                return Err(DocumentError::Unsupported(format!(
                    "{:?}; send PDF, HTML, Markdown or plain text",
                    other.chars().take(60).collect::<String>()
                )));
            }
        })
    }

    /// Detects the type of `bytes`; `declared` (a Content-Type or a name) decides between
    /// Markdown and plain text, and must not contradict the bytes.
    pub fn detect(bytes: &[u8], declared: Option<&str>) -> Result<Self, DocumentError> {
        let declared = declared.map(Self::declared).transpose()?.flatten();
        let head = &bytes[..bytes.len().min(1024)];
        let sniffed = if head.starts_with(b"%PDF-") {
            Self::Pdf
        } else {
            if std::str::from_utf8(bytes).is_err() {
                return Err(DocumentError::NotADocument(
                    "binary data that is not a PDF (text must be UTF-8)".into(),
                ));
            }
            let start = String::from_utf8_lossy(head)
                .trim_start_matches('\u{feff}')
                .trim_start()
                .to_ascii_lowercase();
            if ["<!doctype html", "<html", "<head", "<body", "<?xml"]
                .iter()
                .any(|m| start.starts_with(m))
            {
                Self::Html
            } else {
                match declared {
                    Some(Self::Markdown) => Self::Markdown,
                    Some(Self::Text) => Self::Text,
                    _ if looks_like_markdown(bytes) => Self::Markdown,
                    _ => Self::Text,
                }
            }
        };
        match declared {
            Some(d) if d != sniffed && !(d == Self::Html && sniffed == Self::Text) => {
                Err(DocumentError::NotADocument(format!(
                    "declared {} but the content is {}",
                    d.name(),
                    sniffed.name()
                )))
            }
            // A fragment of HTML declared as such (no doctype) is HTML.
            Some(Self::Html) => Ok(Self::Html),
            _ => Ok(sniffed),
        }
    }
}

fn looks_like_markdown(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(64 * 1024)]);
    text.lines().any(|line| {
        let l = line.trim_start();
        (l.starts_with('#') && l.trim_start_matches('#').starts_with(' '))
            || l.starts_with("```")
            || l.starts_with("- ")
            || l.starts_with("* ")
            || (l.contains("](") && l.contains('['))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_come_from_the_bytes() {
        assert_eq!(
            DocumentKind::detect(b"%PDF-1.4\n...", None),
            Ok(DocumentKind::Pdf)
        );
        assert_eq!(
            DocumentKind::detect(b"  <!DOCTYPE html><html></html>", None),
            Ok(DocumentKind::Html)
        );
        assert_eq!(
            DocumentKind::detect(b"# Title\n\nText", None),
            Ok(DocumentKind::Markdown)
        );
        assert_eq!(
            DocumentKind::detect(b"Just words.", None),
            Ok(DocumentKind::Text)
        );
        assert_eq!(
            DocumentKind::detect(b"# not a heading to me", Some("text/plain")),
            Ok(DocumentKind::Text)
        );
        assert_eq!(
            DocumentKind::detect(b"<p>fragment</p>", Some("text/html")),
            Ok(DocumentKind::Html)
        );
    }

    #[test]
    fn contradictions_and_unknown_types_are_refused() {
        assert!(DocumentKind::detect(b"%PDF-1.4", Some("text/markdown")).is_err());
        assert!(DocumentKind::detect(b"hello", Some("image/png")).is_err());
        assert!(DocumentKind::detect(&[0xff, 0xfe, 0x00, 0x01], None).is_err());
    }
}
