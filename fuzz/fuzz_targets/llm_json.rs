//! Model output parsing never panics, and what it returns is JSON that
//! reads back (the parser's output is always a repaired, valid value).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(v) = hippo::llm::parse::json_value(text) {
            assert!(hippo::llm::parse::json_value(&v.to_string()).is_some());
        }
    }
});
