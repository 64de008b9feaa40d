//! machines.toml parsing and validation (the shipped templates fixed).
//! The harness is `pxed::fuzzing::config` (src/fuzzing/).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pxed::fuzzing::config(data));
