//! The library half of the `hippo` binary: the REST API's request and
//! response types ([`api`]), kept apart so the fuzz targets in `fuzz/` can
//! parse requests exactly as the server does ([`fuzzing`]).

pub mod api;
pub mod fuzzing;
