//! The keyword document of a memory: what every store indexes for the
//! keyword channel, so a query finds the same memories on every store.
//!
//! Three columns, weighted by [`COLUMN_WEIGHTS`](super::keywords::COLUMN_WEIGHTS):
//! - body: the content with CJK runs split ([`keyword_text`]) plus date
//!   tokens for the day it happened and every time expression in it
//!   ([`keyword_body`]);
//! - speaker: the speaker's name;
//! - context: the lines (`name: content`) of the previous and next message
//!   of the same exact scope, so "what did she answer" finds the answer
//!   whose question holds the words.
//!
//! Terms are FTS5's (`porter unicode61 remove_diacritics 2`): the SQLite
//! store indexes the text with FTS5 itself; other stores index the terms
//! [`Tokenizer`] reads back from FTS5, so both agree term for term.

use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection};

use crate::error::Result;
use crate::model::Memory;
use crate::text::{keyword_body, keyword_text};

/// The body column of `m`'s keyword document.
pub fn body(m: &Memory) -> String {
    keyword_body(&m.content, m.event_time.unwrap_or(m.recorded_at))
}

/// The speaker column of `m`'s keyword document.
pub fn speaker(m: &Memory) -> Option<String> {
    m.actor.name.as_deref().map(keyword_text)
}

/// The line a message contributes to its neighbours' context column.
pub fn line(name: Option<&str>, content: &str) -> String {
    match name {
        Some(n) => format!("{n}: {content}"),
        None => content.to_owned(),
    }
}

/// The context column from the neighbours' lines (previous, then next).
pub fn context<'a>(lines: impl IntoIterator<Item = &'a str>) -> String {
    let mut context = String::new();
    for l in lines {
        context.push_str(l);
        context.push('\n');
    }
    keyword_text(&context)
}

/// FTS5's tokenizer, outside any store file: an in-memory SQLite connection
/// per concurrent caller (a handful, reused).
pub struct Tokenizer {
    conns: Vec<Mutex<Connection>>,
}

impl Tokenizer {
    /// A tokenizer for up to `parallel` concurrent callers without waiting.
    pub fn new(parallel: usize) -> Result<Self> {
        let mut conns = Vec::with_capacity(parallel.max(1));
        for _ in 0..parallel.max(1) {
            let conn = Connection::open_in_memory()?;
            super::fts::install_tokenizer(&conn)?;
            conns.push(Mutex::new(conn));
        }
        Ok(Tokenizer { conns })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conns
            .iter()
            .find_map(|c| c.try_lock().ok())
            .unwrap_or_else(|| self.conns[0].lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Every token of `text` in order, repeats included (a document column).
    pub fn terms(&self, text: &str) -> Result<Vec<String>> {
        if text.trim().is_empty() {
            return Ok(Vec::new());
        }
        let conn = self.conn();
        conn.prepare_cached("INSERT INTO temp.kw_tok (rowid, body) VALUES (1, ?1)")?
            .execute(params![text])?;
        let out: rusqlite::Result<Vec<String>> = conn
            .prepare_cached("SELECT term FROM temp.kw_tok_terms ORDER BY offset")?
            .query_map([], |r| r.get(0))?
            .collect();
        conn.prepare_cached("DELETE FROM temp.kw_tok")?
            .execute([])?;
        Ok(out?)
    }

    /// The distinct tokens of query terms (see [`crate::text::query_terms`]),
    /// in order of first appearance.
    pub fn query_tokens(&self, terms: &[String]) -> Result<Vec<String>> {
        super::fts::tokens(&self.conn(), &terms.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_keep_repeats_and_order_and_match_query_tokens() {
        let t = Tokenizer::new(1).unwrap();
        assert_eq!(
            t.terms("Running dogs ran; running Café").unwrap(),
            ["run", "dog", "ran", "run", "cafe"]
        );
        assert!(t.terms("  ").unwrap().is_empty());
        assert_eq!(
            t.query_tokens(&["running".into(), "dogs".into(), "run".into()])
                .unwrap(),
            ["run", "dog"]
        );
    }

    #[test]
    fn context_joins_lines_in_order() {
        let c = context([line(Some("Ann"), "hi").as_str(), "bye"]);
        assert_eq!(c, "Ann: hi\nbye\n");
    }
}
