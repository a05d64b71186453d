//! Front door 2: `grace serve`, an HTTP gateway in front of real HTTP
//! services (being built).

pub mod config;
pub mod routes;
