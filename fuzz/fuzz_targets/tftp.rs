//! TFTP request parsing, file name confinement and option negotiation.
//! The harness is `pxed::fuzzing::tftp` (src/fuzzing/).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pxed::fuzzing::tftp(data));
