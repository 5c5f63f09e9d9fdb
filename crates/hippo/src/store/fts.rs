//! FTS5 glue for the keyword index: FTS5 is the tokenizer and the durable
//! keyword index; this module reads its terms back so the in-memory mirror
//! (`keywords.rs`) sees exactly FTS5's tokens.
//!
//! To tokenize a text with FTS5's own tokenizer, it is inserted into a TEMP
//! FTS5 table with the same tokenizer and read back through an `fts5vocab`
//! table, then deleted; TEMP tables live in the connection's memory and never
//! touch the database file.

use std::collections::HashMap;

use rusqlite::{params, Connection};

use super::keywords::KeywordDoc;
use crate::error::{Error, Result};

/// The tokenizer of `memory_fts` (schema v1). Changing it needs a migration
/// that rebuilds `memory_fts`.
pub const TOKENIZE: &str = "porter unicode61 remove_diacritics 2";

fn column(name: &str) -> Result<usize> {
    match name {
        "body" => Ok(0),
        "speaker" => Ok(1),
        "context" => Ok(2),
        other => Err(Error::new(
            crate::ErrorKind::Internal,
            format!("unknown keyword column {other}"),
        )),
    }
}

/// Creates the TEMP tokenizing tables on `conn` (idempotent).
pub fn install_tokenizer(conn: &Connection) -> Result<()> {
    conn.execute_batch(&format!(
        "PRAGMA temp_store = MEMORY;
         CREATE VIRTUAL TABLE IF NOT EXISTS temp.kw_tok USING fts5(body, speaker, context, tokenize = '{TOKENIZE}');
         CREATE VIRTUAL TABLE IF NOT EXISTS temp.kw_tok_terms USING fts5vocab(temp, kw_tok, instance);"
    ))?;
    Ok(())
}

/// Reads `(doc, term, column)` rows of an `fts5vocab` instance table into documents.
fn read_instances(conn: &Connection, vocab: &str) -> Result<HashMap<i64, KeywordDoc>> {
    let mut docs: HashMap<i64, KeywordDoc> = HashMap::new();
    let mut stmt = conn.prepare_cached(&format!("SELECT doc, term, col FROM {vocab}"))?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let text = |i: usize| -> rusqlite::Result<&str> { Ok(r.get_ref(i)?.as_str()?) };
        let col = column(text(2)?)?;
        docs.entry(r.get(0)?).or_default().add(text(1)?, col);
    }
    Ok(docs)
}

/// The keyword documents of these rows of `main.memory_fts`, tokenized by
/// FTS5 (rows without tokens or absent from `memory_fts` are absent).
/// Runs on the writer inside its transaction, so it sees uncommitted rows.
pub fn docs_of(conn: &Connection, rowids: &[i64]) -> Result<HashMap<i64, KeywordDoc>> {
    if rowids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut copy = conn.prepare_cached(
        "INSERT INTO temp.kw_tok (rowid, body, speaker, context)
         SELECT rowid, body, speaker, context FROM main.memory_fts WHERE rowid = ?1",
    )?;
    for r in rowids {
        copy.execute([r])?;
    }
    let docs = read_instances(conn, "temp.kw_tok_terms");
    conn.prepare_cached("DELETE FROM temp.kw_tok")?
        .execute([])?;
    docs
}

/// Calls `f(term, rowid, column)` for every token of `main.memory_fts`, in
/// `fts5vocab` order: grouped by term, then by ascending rowid (at open).
pub fn for_each_instance(
    conn: &Connection,
    mut f: impl FnMut(&str, i64, usize) -> Result<()>,
) -> Result<()> {
    conn.execute_batch(
        "CREATE VIRTUAL TABLE IF NOT EXISTS temp.kw_main_terms USING fts5vocab(main, memory_fts, instance);",
    )?;
    let mut stmt = conn.prepare("SELECT term, doc, col FROM temp.kw_main_terms")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let term = r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?;
        let col = column(r.get_ref(2)?.as_str().map_err(rusqlite::Error::from)?)?;
        f(term, r.get(1)?, col)?;
    }
    Ok(())
}

/// The distinct FTS5 tokens of `text`, in order of first appearance.
pub fn tokens(conn: &Connection, text: &str) -> Result<Vec<String>> {
    conn.prepare_cached("INSERT INTO temp.kw_tok (rowid, body) VALUES (1, ?1)")?
        .execute(params![text])?;
    let out: rusqlite::Result<Vec<String>> = conn
        .prepare_cached("SELECT term FROM temp.kw_tok_terms GROUP BY term ORDER BY min(offset)")?
        .query_map([], |r| r.get(0))?
        .collect();
    conn.prepare_cached("DELETE FROM temp.kw_tok")?
        .execute([])?;
    Ok(out?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_fts5_tokens() {
        let conn = Connection::open_in_memory().unwrap();
        install_tokenizer(&conn).unwrap();
        let t = tokens(&conn, "Running runners ran to the Café running").unwrap();
        assert_eq!(t, ["run", "runner", "ran", "to", "the", "cafe"]);
        assert!(tokens(&conn, "  ").unwrap().is_empty());
        // The table is left empty for the next call.
        assert_eq!(tokens(&conn, "again").unwrap(), ["again"]);
    }
}
