//! The e5 model file parser (`E5Embedder::from_bytes`): any bytes are a
//! model or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = hippo::E5Embedder::from_bytes(data);
});
