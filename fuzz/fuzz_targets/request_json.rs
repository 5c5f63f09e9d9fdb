//! Request bodies: any bytes, parsed as every body the server takes and
//! validated as the server would; must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hippo_server::fuzzing::request_json(data);
});
