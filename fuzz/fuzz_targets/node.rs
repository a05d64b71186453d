//! Arbitrary bytes through framer and node: no panic, no spinning timer,
//! every output line one valid reply envelope, every message answered as
//! the protocol promises.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| grace_fuzz::fuzz_node(data));
