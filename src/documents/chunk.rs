//! Chunks of a document's text, by tokens with overlap (`text-splitter`): Markdown (and HTML,
//! which arrives as Markdown) is split at headings first, then paragraphs, sentences and
//! words; plain text and PDF text at paragraphs, sentences and words. Each chunk keeps its
//! character range in the text, its page (PDF) and the path of headings above it.

use super::{DocumentError, DocumentKind, Extracted};
use pulldown_cmark::{Event, HeadingLevel, Parser, Tag, TagEnd};
use text_splitter::{ChunkConfig, ChunkSizer, MarkdownSplitter, TextSplitter};

/// How big chunks are, in tokens of the provider's tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSettings {
    pub max_tokens: usize,
    pub overlap_tokens: usize,
}

/// One chunk of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// From 0, in document order.
    pub index: usize,
    pub text: String,
    /// Character offsets of the chunk in the extracted text: [start, end).
    pub char_start: usize,
    pub char_end: usize,
    /// The PDF page the chunk begins on (from 1).
    pub page: Option<u32>,
    /// The titles of the headings above the chunk, outermost first.
    pub heading_path: Vec<String>,
}

/// Counts tokens with the caller's tokenizer.
struct Tokens<'a>(&'a (dyn Fn(&str) -> usize + Sync));

impl ChunkSizer for Tokens<'_> {
    fn size(&self, chunk: &str) -> usize {
        (self.0)(chunk)
    }
}

/// Each heading of a Markdown text: where it begins, its level and its title.
fn headings(markdown: &str) -> Vec<(usize, usize, String)> {
    let mut found = Vec::new();
    let mut open: Option<(usize, usize, String)> = None;
    for (event, range) in Parser::new(markdown).into_offset_iter() {
        match event {
            Event::Start(Tag::Heading { level, .. }) => {
                let level = match level {
                    HeadingLevel::H1 => 1,
                    HeadingLevel::H2 => 2,
                    HeadingLevel::H3 => 3,
                    HeadingLevel::H4 => 4,
                    HeadingLevel::H5 => 5,
                    HeadingLevel::H6 => 6,
                };
                open = Some((range.start, level, String::new()));
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some((_, _, title)) = open.as_mut() {
                    title.push_str(&t);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some((start, level, title)) = open.take() {
                    found.push((start, level, title.trim().to_owned()));
                }
            }
            _ => {}
        }
    }
    found
}

/// The titles of the headings in force at byte `offset`, outermost first.
fn path_at(headings: &[(usize, usize, String)], offset: usize) -> Vec<String> {
    let mut stack: Vec<(usize, &str)> = Vec::new();
    for (start, level, title) in headings {
        if *start > offset {
            break;
        }
        while stack.last().is_some_and(|(l, _)| l >= level) {
            stack.pop();
        }
        stack.push((*level, title));
    }
    stack.into_iter().map(|(_, t)| t.to_owned()).collect()
}

/// Splits an extracted document into chunks of at most `settings.max_tokens` tokens as
/// `count_tokens` counts them, neighbours sharing up to `settings.overlap_tokens`; stops (and
/// refuses the document) as soon as it would make more than `max_chunks`.
pub fn chunk(
    kind: DocumentKind,
    extracted: &Extracted,
    settings: ChunkSettings,
    max_chunks: usize,
    count_tokens: &(dyn Fn(&str) -> usize + Sync),
) -> Result<Vec<Chunk>, DocumentError> {
    let config = ChunkConfig::new(settings.max_tokens)
        .with_overlap(settings.overlap_tokens)
        .map_err(|e| DocumentError::Settings(format!("chunking: {e}")))?
        .with_sizer(Tokens(count_tokens));
    let text = extracted.text.as_str();
    let pieces: Vec<(usize, usize, &str)> = match kind {
        DocumentKind::Markdown | DocumentKind::Html => MarkdownSplitter::new(config)
            .chunk_char_indices(text)
            .map(|c| (c.byte_offset, c.char_offset, c.chunk))
            .filter(|(_, _, piece)| !piece.trim().is_empty())
            .take(max_chunks + 1)
            .collect(),
        DocumentKind::Text | DocumentKind::Pdf => TextSplitter::new(config)
            .chunk_char_indices(text)
            .map(|c| (c.byte_offset, c.char_offset, c.chunk))
            .filter(|(_, _, piece)| !piece.trim().is_empty())
            .take(max_chunks + 1)
            .collect(),
    };
    if pieces.len() > max_chunks {
        return Err(DocumentError::TooManyChunks(max_chunks));
    }
    let headings = match kind {
        DocumentKind::Markdown | DocumentKind::Html => headings(text),
        _ => Vec::new(),
    };
    Ok(pieces
        .into_iter()
        .enumerate()
        .map(|(index, (byte, chars, piece))| Chunk {
            index,
            text: piece.to_owned(),
            char_start: chars,
            char_end: chars + piece.chars().count(),
            page: extracted.page_at(byte),
            heading_path: path_at(&headings, byte),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> usize {
        text.split_whitespace().count()
    }

    fn markdown() -> Extracted {
        let mut text = String::from("# Guide\n\nIntro words here.\n\n## Install\n\n");
        text.push_str(&"Install step words. ".repeat(30));
        text.push_str("\n\n## Use\n\n");
        text.push_str(&"Use it like this. ".repeat(8));
        text.push_str("\n\n### Flags\n\n");
        text.push_str(&"Flag words here. ".repeat(8));
        Extracted {
            text,
            page_starts: Vec::new(),
        }
    }

    #[test]
    fn markdown_splits_at_headings_within_the_limit_and_knows_its_path() {
        let settings = ChunkSettings {
            max_tokens: 40,
            overlap_tokens: 0,
        };
        let doc = markdown();
        let chunks = chunk(DocumentKind::Markdown, &doc, settings, 100, &words).unwrap();
        assert!(chunks.len() >= 3, "{chunks:#?}");
        for c in &chunks {
            assert!(words(&c.text) <= 40, "{c:?}");
            let chars: String = doc
                .text
                .chars()
                .skip(c.char_start)
                .take(c.char_end - c.char_start)
                .collect();
            assert_eq!(chars, c.text, "the range points at the chunk");
        }
        let flags = chunks
            .iter()
            .find(|c| c.text.contains("Flag words"))
            .unwrap();
        assert_eq!(flags.heading_path, ["Guide", "Use", "Flags"]);
        let install = chunks
            .iter()
            .find(|c| c.text.contains("Install step"))
            .unwrap();
        assert_eq!(install.heading_path, ["Guide", "Install"]);
        // No chunk runs across a heading it could have stopped at.
        assert!(
            chunks
                .iter()
                .all(|c| !(c.text.contains("Intro words") && c.text.contains("Install step")))
        );
        assert_eq!(
            chunks.iter().map(|c| c.index).collect::<Vec<_>>(),
            (0..chunks.len()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn overlap_repeats_the_end_of_a_chunk_at_the_start_of_the_next() {
        let text = (0..200)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let doc = Extracted {
            text,
            page_starts: Vec::new(),
        };
        let settings = ChunkSettings {
            max_tokens: 50,
            overlap_tokens: 10,
        };
        let chunks = chunk(DocumentKind::Text, &doc, settings, 100, &words).unwrap();
        assert!(chunks.len() >= 4);
        for pair in chunks.windows(2) {
            assert!(pair[1].char_start < pair[0].char_end, "{pair:?} overlap");
        }
        let bad = ChunkSettings {
            max_tokens: 10,
            overlap_tokens: 10,
        };
        assert!(matches!(
            chunk(DocumentKind::Text, &doc, bad, 100, &words),
            Err(DocumentError::Settings(_))
        ));
        assert_eq!(
            chunk(DocumentKind::Text, &doc, settings, 2, &words),
            Err(DocumentError::TooManyChunks(2))
        );
    }

    #[test]
    fn pdf_chunks_know_their_page() {
        let doc = Extracted {
            text: "Page one text.\n\nPage two text.".into(),
            page_starts: vec![0, 16],
        };
        let settings = ChunkSettings {
            max_tokens: 3,
            overlap_tokens: 0,
        };
        let chunks = chunk(DocumentKind::Pdf, &doc, settings, 100, &words).unwrap();
        let pages: Vec<Option<u32>> = chunks.iter().map(|c| c.page).collect();
        assert_eq!(pages, [Some(1), Some(2)], "{chunks:?}");
    }
}
