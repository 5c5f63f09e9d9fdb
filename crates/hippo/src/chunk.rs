//! Splits long texts into overlapping chunks that fit the embedder's window,
//! preferring to end a chunk at a sentence boundary.
//!
//! Invariants: every chunk has at most `max_tokens` tokens by the given
//! counter (a single word longer than that becomes its own chunk and is
//! truncated by the embedder); concatenating the chunks without their
//! overlaps reproduces the words of the input in order; a text that fits is
//! returned as one chunk, unchanged.

/// How to chunk.
#[derive(Debug, Clone, Copy)]
pub struct ChunkPolicy {
    /// Most tokens per chunk.
    pub max_tokens: usize,
    /// Tokens repeated from the end of one chunk at the start of the next.
    pub overlap_tokens: usize,
}

impl ChunkPolicy {
    /// A policy for an embedder window: leaves room for special tokens and a
    /// speaker prefix, and overlaps by about an eighth.
    pub fn for_window(window: usize) -> Self {
        let max_tokens = window.saturating_sub(16).max(8);
        ChunkPolicy {
            max_tokens,
            overlap_tokens: max_tokens / 8,
        }
    }
}

/// The units a chunk is cut between, each with its trailing whitespace:
/// words, and each character of a script written without spaces (Chinese,
/// Japanese, Korean), so such text is chunked too. Concatenated, they are
/// `text`.
fn words_of(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        let next = chars.peek().copied();
        let boundary = next.is_none_or(|(_, n)| {
            !n.is_whitespace()
                && (c.is_whitespace() || crate::text::is_cjk(c) || crate::text::is_cjk(n))
        });
        if boundary {
            let end = next.map_or(text.len(), |(j, _)| j);
            out.push(&text[start..end]);
            start = end;
        }
    }
    out
}

/// Splits `text` into chunks; `count` returns the token count of a piece.
pub fn chunk_text(text: &str, policy: ChunkPolicy, count: impl Fn(&str) -> usize) -> Vec<String> {
    if count(text) <= policy.max_tokens {
        return vec![text.to_owned()];
    }
    // Words with their trailing whitespace, and each word's token cost.
    let words = words_of(text);
    let costs: Vec<usize> = words.iter().map(|w| count(w.trim()).max(1)).collect();
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < words.len() {
        let mut end = start;
        let mut used = 0;
        while end < words.len() && (end == start || used + costs[end] <= policy.max_tokens) {
            used += costs[end];
            end += 1;
        }
        // Prefer to end at a sentence boundary found in the last quarter.
        if end < words.len() {
            let floor = start + (end - start) * 3 / 4;
            if let Some(b) = (floor.max(start + 1)..end).rev().find(|&i| {
                let w = words[i - 1].trim_end();
                w.ends_with(['.', '!', '?', '。', '！', '？'])
            }) {
                end = b;
            }
        }
        chunks.push(words[start..end].concat().trim().to_owned());
        if end >= words.len() {
            break;
        }
        // Step back over the overlap, but always make progress.
        let mut back = end;
        let mut overlap = 0;
        while back > start + 1 && overlap + costs[back - 1] <= policy.overlap_tokens {
            back -= 1;
            overlap += costs[back];
        }
        start = back;
    }
    chunks.retain(|c| !c.is_empty());
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    #[test]
    fn short_text_is_one_chunk() {
        let p = ChunkPolicy {
            max_tokens: 10,
            overlap_tokens: 2,
        };
        assert_eq!(chunk_text("a b c", p, words), vec!["a b c"]);
    }

    #[test]
    fn long_text_overlaps() {
        let text: String = (0..30).map(|i| format!("w{i} ")).collect();
        let p = ChunkPolicy {
            max_tokens: 10,
            overlap_tokens: 3,
        };
        let chunks = chunk_text(&text, p, words);
        assert!(chunks.len() >= 3);
        assert!(chunks[0].starts_with("w0 ") && chunks[0].ends_with("w9"));
        assert!(chunks[1].starts_with("w7 "));
    }

    #[test]
    fn text_without_spaces_is_chunked_by_character() {
        let text = "我今天去了超市。买了牛奶和面包！还有苹果？".repeat(4);
        let chars = |s: &str| s.chars().filter(|c| !c.is_whitespace()).count();
        let p = ChunkPolicy {
            max_tokens: 24,
            overlap_tokens: 3,
        };
        let chunks = chunk_text(&text, p, chars);
        assert!(chunks.len() >= 4, "{chunks:?}");
        assert!(chunks.iter().all(|c| chars(c) <= 24));
        // Cut at sentence ends where one is near.
        assert!(chunks[0].ends_with(['。', '！', '？']), "{chunks:?}");
        assert_eq!(
            words_of("ab 小米12 cd"),
            vec!["ab ", "小", "米", "12 ", "cd"]
        );
        assert_eq!(words_of("ab  cd ").concat(), "ab  cd ");
    }

    proptest! {
        #[test]
        fn chunks_fit_and_cover(n in 1usize..200, max in 2usize..40, ov in 0usize..10) {
            let text: String = (0..n).map(|i| format!("w{i}{} ", if i % 7 == 6 { "." } else { "" })).collect();
            let p = ChunkPolicy { max_tokens: max, overlap_tokens: ov.min(max / 2) };
            let chunks = chunk_text(&text, p, words);
            let mut seen = Vec::new();
            for c in &chunks {
                prop_assert!(words(c) <= max);
                for w in c.split_whitespace() {
                    if !seen.contains(&w.to_owned()) { seen.push(w.to_owned()); }
                }
            }
            let all: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
            prop_assert_eq!(seen, all);
        }
    }
}
