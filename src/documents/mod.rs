//! Documents in, chunks out: a file's type detected from its bytes (PDF, HTML, Markdown or
//! plain text), its text extracted (PDF page by page with `pdf-extract`; HTML to Markdown with
//! `htmd`, boilerplate dropped, so its headings survive), and the text split into chunks by
//! tokens with overlap (`text-splitter`), preferring headings, paragraphs and sentences as
//! boundaries. Each chunk keeps its page, heading path and character range.
//!
//! Pure and synchronous: the HTTP surface runs it on a blocking thread, where a panic in an
//! extractor on a hostile file is caught and answered as a refused document.

mod chunk;
mod extract;
mod kind;

pub use chunk::{Chunk, ChunkSettings, chunk};
pub use extract::{Extracted, extract};
pub use kind::DocumentKind;

/// Why a document was refused; the message is safe to show to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// A declared type embedq does not read (415).
    #[error("unsupported document type: {0}")]
    Unsupported(String),
    /// Bytes that are not a document of a type embedq reads, or not of the declared type.
    #[error("not a document embedq can read: {0}")]
    NotADocument(String),
    #[error("the document cannot be read: {0}")]
    Unreadable(String),
    #[error("the document holds no text{0}")]
    NoText(&'static str),
    #[error("the document makes more than {0} chunks (documents.max_chunks)")]
    TooManyChunks(usize),
    #[error("{0}")]
    Settings(String),
}
