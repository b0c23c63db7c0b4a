//! The AdminServer's command table: ZooKeeper's command names and their short names.
//!
//! A request names a command by any of its names (`/commands/srvr` = `/commands/server_stats`);
//! the answer's `command` field always carries the primary (first) name, as ZooKeeper's does.

/// One command: its primary name first, then the names it also answers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command {
    pub names: &'static [&'static str],
}

impl Command {
    pub fn primary(&self) -> &'static str {
        self.names[0]
    }
}

/// The commands Corral serves. ZooKeeper's JVM-only commands (`system_properties`), trace
/// masks and the Zab-specific `zabstate` / `observer_connection_stat_reset` are not here.
/// (Kept in ZooKeeper's order: sorted by primary name.)
pub const COMMANDS: &[Command] = &[
    Command {
        names: &["configuration", "conf", "config"],
    },
    Command {
        names: &["connection_stat_reset", "crst"],
    },
    Command {
        names: &["connections", "cons"],
    },
    Command { names: &["dirs"] },
    Command { names: &["dump"] },
    Command {
        names: &["environment", "env", "envi"],
    },
    Command { names: &["hash"] },
    Command {
        names: &["initial_configuration", "icfg"],
    },
    Command {
        names: &["is_read_only", "isro"],
    },
    Command {
        names: &["last_snapshot", "lsnp"],
    },
    Command {
        names: &["leader", "lead"],
    },
    Command {
        names: &["monitor", "mntr"],
    },
    Command {
        names: &["observers", "obsr"],
    },
    Command { names: &["ruok"] },
    Command {
        names: &["server_stats", "srvr"],
    },
    Command {
        names: &["stat_reset", "srst"],
    },
    Command {
        names: &["stats", "stat"],
    },
    Command {
        names: &["voting_view"],
    },
    Command {
        names: &["watch_summary", "wchs"],
    },
    Command {
        names: &["watches", "wchc"],
    },
    Command {
        names: &["watches_by_path", "wchp"],
    },
];

/// The command `name` (primary or short) refers to.
pub fn find(name: &str) -> Option<&'static Command> {
    COMMANDS.iter().find(|c| c.names.contains(&name))
}

/// Primary names, sorted, as `GET <commandURL>` lists them.
pub fn primary_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = COMMANDS.iter().map(Command::primary).collect();
    names.sort_unstable();
    names
}

/// The command list page: one link per primary name, in ZooKeeper's markup.
pub fn index_html(command_url: &str) -> String {
    let mut out = String::new();
    for name in primary_names() {
        out.push_str(&format!(
            "<a href=\"{command_url}/{name}\">{name}</a>\n<br/>\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_resolve_to_the_primary() {
        assert_eq!(find("srvr").map(Command::primary), Some("server_stats"));
        assert_eq!(find("mntr").map(Command::primary), Some("monitor"));
        assert_eq!(find("stats").map(Command::primary), Some("stats"));
        assert_eq!(find("nosuch"), None);
    }

    #[test]
    fn every_name_is_unique() {
        let mut all: Vec<&str> = COMMANDS
            .iter()
            .flat_map(|c| c.names.iter().copied())
            .collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
    }

    #[test]
    fn index_links_every_primary_name() {
        let html = index_html("/commands");
        assert!(html.starts_with("<a href=\"/commands/configuration\">configuration</a>\n<br/>\n"));
        assert_eq!(html.matches("<a href").count(), COMMANDS.len());
    }
}
