//! The filter syntax: list query strings and search `filters` objects; must
//! never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hippo_server::fuzzing::filter_syntax(data);
});
