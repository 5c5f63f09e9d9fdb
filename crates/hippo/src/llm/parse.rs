//! Tolerant parsing of model output that should be JSON. Small models wrap
//! it in prose or code fences, leave trailing commas, stop mid-object when
//! they hit the token limit, or use Python literals and single quotes.
//! [`json_value`] finds the JSON in the text and repairs what can be repaired
//! without guessing: a cut-off answer keeps its complete items and drops the
//! unfinished one. Whatever it returns is valid JSON that the caller still
//! validates field by field. It never panics (property-tested, and fuzzed:
//! `fuzz/fuzz_targets/llm_json.rs`, `cargo +nightly fuzz run llm_json`).

use serde_json::Value;

/// The JSON object or array in `text`, repaired if needed; `None` when
/// there is none.
pub fn json_value(text: &str) -> Option<Value> {
    let start = text.find(['{', '['])?;
    let body = &text[start..];
    // Fast path: well-formed JSON, possibly followed by prose.
    let mut stream = serde_json::Deserializer::from_str(body).into_iter::<Value>();
    if let Some(Ok(v)) = stream.next() {
        return Some(v);
    }
    let repaired = repair(body);
    serde_json::from_str(&repaired).ok()
}

/// Repairs JSON-ish text that starts at an opening bracket: stops at the end
/// of the first complete value, drops trailing commas, turns Python
/// literals (`True`, `False`, `None`) and single-quoted strings into JSON,
/// and closes what a cut-off answer left open. What was cut off is dropped,
/// not guessed: a half string or dangling key, and any unfinished object
/// below the top level (an object missing fields is not an answer), while
/// a cut-off list keeps its complete items.
fn repair(body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 8);
    let mut stack: Vec<char> = Vec::new();
    let mut chars = body.chars().peekable();
    // Position in `out` after the last complete element at each depth, so a
    // cut-off element can be dropped.
    let mut safe: Vec<usize> = Vec::new();
    // Where each open container starts in `out`.
    let mut starts: Vec<usize> = Vec::new();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                let quote = c;
                let mut s = String::from('"');
                let mut closed = false;
                while let Some(d) = chars.next() {
                    match d {
                        '\\' => {
                            if let Some(e) = chars.next() {
                                if e == '\'' {
                                    s.push('\'');
                                } else {
                                    s.push('\\');
                                    s.push(e);
                                }
                            }
                        }
                        d if d == quote => {
                            closed = true;
                            break;
                        }
                        '"' => s.push_str("\\\""),
                        '\n' => s.push_str("\\n"),
                        d if (d as u32) < 0x20 => {}
                        d => s.push(d),
                    }
                }
                if !closed {
                    break; // cut off inside a string: drop it
                }
                s.push('"');
                out.push_str(&s);
            }
            '{' | '[' => {
                stack.push(if c == '{' { '}' } else { ']' });
                starts.push(out.len());
                out.push(c);
                safe.push(out.len());
            }
            '}' | ']' => {
                if stack.last() != Some(&c) {
                    break; // mismatched: keep what was balanced
                }
                trim_trailing_comma(&mut out);
                stack.pop();
                safe.pop();
                starts.pop();
                out.push(c);
                if stack.is_empty() {
                    return out;
                }
                if let Some(s) = safe.last_mut() {
                    *s = out.len();
                }
            }
            ',' => {
                out.push(c);
                if let Some(s) = safe.last_mut() {
                    *s = out.len();
                }
            }
            c if c.is_alphabetic() => {
                let mut word = String::from(c);
                while let Some(&d) = chars.peek() {
                    if d.is_alphanumeric() || d == '_' {
                        word.push(d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push_str(match word.as_str() {
                    "True" | "true" => "true",
                    "False" | "false" => "false",
                    "None" | "null" => "null",
                    _ => break,
                });
            }
            c => out.push(c),
        }
    }
    // Cut off: drop the outermost unfinished object below the top level
    // (with everything inside it), then the unfinished element, and close
    // what is open.
    if let Some(i) = (1..stack.len()).find(|&i| stack[i] == '}') {
        out.truncate(starts[i]);
        stack.truncate(i);
        safe.truncate(i);
    }
    if let Some(&s) = safe.last() {
        out.truncate(s.min(out.len()));
    }
    trim_trailing_comma(&mut out);
    while let Some(close) = stack.pop() {
        trim_trailing_comma(&mut out);
        out.push(close);
    }
    out
}

fn trim_trailing_comma(out: &mut String) {
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    if out.ends_with(',') {
        out.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn clean_json_and_json_in_prose_or_fences() {
        assert_eq!(json_value(r#"{"a": 1}"#), Some(json!({"a": 1})));
        assert_eq!(
            json_value("Sure! Here it is:\n```json\n{\"facts\": [\"x\"]}\n```\nAnything else?"),
            Some(json!({"facts": ["x"]}))
        );
        assert_eq!(json_value("no json here"), None);
    }

    #[test]
    fn common_breakage_is_repaired() {
        assert_eq!(
            json_value(r#"{"facts": ["a", "b",], }"#),
            Some(json!({"facts": ["a", "b"]}))
        );
        assert_eq!(
            json_value("{'event': 'ADD', 'ok': True, 'id': None}"),
            Some(json!({"event": "ADD", "ok": true, "id": null}))
        );
        assert_eq!(
            json_value(r#"{"text": "it's \"quoted\"", 'q': 'say "hi"'}"#),
            Some(json!({"text": "it's \"quoted\"", "q": "say \"hi\""}))
        );
    }

    #[test]
    fn cut_off_answers_keep_their_complete_part() {
        assert_eq!(
            json_value(r#"{"facts": ["Ana lives in Boston", "Ana has a d"#),
            Some(json!({"facts": ["Ana lives in Boston"]}))
        );
        assert_eq!(
            json_value(r#"{"facts": [{"text": "a", "kind": "fact"}, {"text": "b", "ki"#),
            Some(json!({"facts": [{"text": "a", "kind": "fact"}]}))
        );
        assert_eq!(json_value(r#"{"facts": ["#), Some(json!({"facts": []})));
        assert_eq!(
            json_value(
                r#"{"facts": [{"text": "a", "tags": ["x"]}, {"text": "b", "tags": ["y", "z"#
            ),
            Some(json!({"facts": [{"text": "a", "tags": ["x"]}]}))
        );
        assert_eq!(
            json_value(r#"{"ok": 1, "inner": {"x": 1, "y""#),
            Some(json!({"ok": 1}))
        );
    }

    proptest::proptest! {
        /// Never panics, and whatever comes back is valid JSON (it is a
        /// `Value`); a valid object survives any suffix of prose.
        #[test]
        fn never_panics(s in ".{0,200}") {
            let _ = json_value(&s);
        }

        #[test]
        fn valid_json_is_read_as_is(keys in proptest::collection::vec("[a-z]{1,8}", 0..5), tail in "[^{\\[]{0,40}") {
            let obj: serde_json::Map<String, Value> = keys.iter().map(|k| (k.clone(), json!(k.len()))).collect();
            let text = format!("{}{tail}", Value::Object(obj.clone()));
            proptest::prop_assert_eq!(json_value(&text), Some(Value::Object(obj)));
        }
    }
}
