//! End-to-end tests of the relay over real WebSockets and HTTP.

mod access;
mod bad_input;
mod cli;
pub mod client;
mod cluster;
mod crash;
mod embedded;
pub mod http;
mod manage;
mod outage;
mod protocol;
mod retention;
