//! JSON objects in every layout (compact, pretty, nested values at column 0,
//! `\r\n`, blank lines), back to back or separated by whitespace, pushed in
//! arbitrary chunks: the framer reads exactly those objects, on their lines.
#![no_main]

use grace_fuzz::messages::ObjectStream;

libfuzzer_sys::fuzz_target!(|stream: ObjectStream| grace_fuzz::fuzz_framing_stream(&stream));
