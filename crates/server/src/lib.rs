//! Corral's server: the pure state machine ([`core`]) and everything that drives it.

pub mod admin;
pub mod config;
pub mod consensus;
pub mod core;
pub mod driver;
pub mod ensemble_config;
pub mod four_letter;
pub mod migrate;
pub mod net;
mod persist;
pub mod testing;

/// The `corral` binary's allocator, so in-crate measurements (the ignored 1M-znode test) see
/// what the server sees.
#[cfg(test)]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
