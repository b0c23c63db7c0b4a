//! `corral cli`: the zkCli-compatible shell (see the `cli` module).

/// zkCli's flags are single-dash words (`-server`, `-timeout`), which clap cannot describe, so
/// everything after `cli` is handed to the shell's own parser.
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub struct Args {
    /// [-server host:port[,host:port][/chroot]] [-timeout ms] [-r] [--json] [cmd args...]
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    args: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let code = crate::cli::run(args.args);
    std::process::exit(code);
}
