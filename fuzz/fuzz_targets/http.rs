//! HTTP request bytes -> hyper -> router -> identity -> rule -> rendered script or menu.
//! The harness is `pxed::fuzzing::http` (src/fuzzing/).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pxed::fuzzing::http(data));
