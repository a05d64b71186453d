//! Plausible message sequences (every message type, good and hostile field
//! values, fault flags, clock jumps) through framer and node: the node
//! target's checks, plus exactly one reply per integer `msg_id`.
#![no_main]

use grace_fuzz::messages::Plan;

libfuzzer_sys::fuzz_target!(|plan: Plan| grace_fuzz::fuzz_node_structured(&plan));
