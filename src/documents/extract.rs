//! A document's text: a PDF's pages (`pdf-extract`, one string per page), HTML as Markdown
//! (`htmd`, with scripts, styles, navigation, headers, footers and forms dropped), Markdown
//! and plain text as they are (NUL characters removed).

use super::{DocumentError, DocumentKind};

/// HTML elements that are not the document's content.
const BOILERPLATE: &[&str] = &[
    "head", "script", "style", "noscript", "nav", "header", "footer", "aside", "form", "svg",
    "iframe", "template", "button",
];

/// The text of a document, ready to split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// Markdown for Markdown and HTML; plain text for plain text and PDF.
    pub text: String,
    /// Where each page begins in `text` (byte offsets, page 1 first); empty unless a PDF.
    pub page_starts: Vec<usize>,
}

impl Extracted {
    /// The page (from 1) holding byte `offset`, for a PDF.
    pub fn page_at(&self, offset: usize) -> Option<u32> {
        if self.page_starts.is_empty() {
            return None;
        }
        let page = self.page_starts.partition_point(|start| *start <= offset);
        Some(page.max(1) as u32)
    }
}

fn shorten(message: String) -> String {
    message.chars().take(200).collect()
}

/// Extracts the text of `bytes`, a document of `kind`.
pub fn extract(kind: DocumentKind, bytes: &[u8]) -> Result<Extracted, DocumentError> {
    let extracted = match kind {
        DocumentKind::Pdf => {
            let pages = pdf_extract::extract_text_from_mem_by_pages(bytes)
                .map_err(|e| DocumentError::Unreadable(shorten(format!("PDF: {e}"))))?;
            let mut text = String::new();
            let mut page_starts = Vec::with_capacity(pages.len());
            for page in pages {
                if !text.is_empty() {
                    text.push_str("\n\n");
                }
                page_starts.push(text.len());
                text.push_str(page.replace('\0', "").trim());
            }
            if text.trim().is_empty() {
                return Err(DocumentError::NoText(
                    " (an image-only or scanned PDF needs OCR, which embedq does not do)",
                ));
            }
            Extracted { text, page_starts }
        }
        DocumentKind::Html => {
            let html = std::str::from_utf8(bytes)
                .map_err(|_| DocumentError::Unreadable("HTML that is not UTF-8".into()))?;
            let converter = htmd::HtmlToMarkdown::builder()
                .skip_tags(BOILERPLATE.to_vec())
                .build();
            let text = converter
                .convert(html)
                .map_err(|e| DocumentError::Unreadable(shorten(format!("HTML: {e}"))))?;
            Extracted {
                text: text.replace('\0', ""),
                page_starts: Vec::new(),
            }
        }
        DocumentKind::Markdown | DocumentKind::Text => {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| DocumentError::Unreadable("text that is not UTF-8".into()))?;
            Extracted {
                text: text.replace('\0', ""),
                page_starts: Vec::new(),
            }
        }
    };
    if extracted.text.trim().is_empty() {
        return Err(DocumentError::NoText(""));
    }
    Ok(extracted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_keeps_its_headings_and_drops_its_boilerplate() {
        let html = b"<!doctype html><html><head><title>t</title><style>p{}</style></head><body>\
            <nav><a href='/'>Home</a> | <a href='/x'>Other</a></nav>\
            <h1>Returns</h1><p>Send the parcel back within 30 days.</p>\
            <h2>Refunds</h2><p>Refunds take five days.</p>\
            <script>track()</script><footer>Copyright 2026</footer></body></html>";
        let out = extract(DocumentKind::Html, html).unwrap();
        assert!(out.text.contains("# Returns"), "{}", out.text);
        assert!(out.text.contains("## Refunds"), "{}", out.text);
        assert!(out.text.contains("Send the parcel back within 30 days."));
        for gone in ["Home", "track()", "Copyright", "p{}"] {
            assert!(!out.text.contains(gone), "{gone} left in {}", out.text);
        }
    }

    #[test]
    fn pages_are_found_by_offset() {
        let e = Extracted {
            text: "one\n\ntwo\n\nthree".into(),
            page_starts: vec![0, 5, 10],
        };
        assert_eq!(e.page_at(0), Some(1));
        assert_eq!(e.page_at(4), Some(1));
        assert_eq!(e.page_at(5), Some(2));
        assert_eq!(e.page_at(12), Some(3));
    }

    #[test]
    fn broken_and_empty_documents_are_refused() {
        assert!(matches!(
            extract(DocumentKind::Pdf, b"%PDF-1.7\nnot really a pdf"),
            Err(DocumentError::Unreadable(_))
        ));
        assert_eq!(
            extract(DocumentKind::Text, b"  \n\t "),
            Err(DocumentError::NoText(""))
        );
    }
}
