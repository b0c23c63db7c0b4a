//! One module per subcommand.

pub mod bench;
pub mod cli;
pub mod datadir;
pub mod server;
