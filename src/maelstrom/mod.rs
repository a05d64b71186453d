//! Front door 1: the Maelstrom node. JSON messages on stdin, one reply line
//! per request on stdout, in front of the demo services.

pub mod handlers;
pub mod node;
