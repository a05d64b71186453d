//! Arbitrary bytes, split into arbitrary chunks, through the framer: no
//! panic, and the same frames whatever the chunking.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| grace_fuzz::fuzz_framing(data));
