//! Corral's server: the pure state machine ([`core`]) and everything that drives it.

pub mod config;
pub mod core;
pub mod driver;
pub mod four_letter;
pub mod net;
mod persist;
pub mod testing;
