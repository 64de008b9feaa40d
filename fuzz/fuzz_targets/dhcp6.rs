//! DHCPv6 packet decode (relays included) + boot decision + reply encode
//! (full and proxy mode). The harness is `pxed::fuzzing::dhcp6` (src/fuzzing/).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pxed::fuzzing::dhcp6(data));
