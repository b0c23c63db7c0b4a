//! `corral cli`: a shell that speaks zkCli's language (commands, flags, output formats, watch
//! events, prompt), against Corral or Apache ZooKeeper, with line editing, history, completion
//! and a few extras (`tree`, `watch`, `stat -h`, `--json`).

mod complete;
mod events;
mod format;
mod membership;
mod parse;
mod quota;

use std::future::Future;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_client::{
    Acl, Client, CreateMode, CreateOptions, Error, OneshotWatch, Stat, WatchMode, ZkError,
};
use futures::TryFutureExt;
use serde_json::{json, Value};
use tokio::runtime::Runtime;
use tokio::sync::watch;

use events::{Events, WatchKind};
use format::ShownEvent;
use parse::{parse_flags, FlagSpec, Parsed};

/// Every command with its usage text (zkCli's wording where zkCli has the command).
pub const COMMANDS: &[(&str, &str)] = &[
    (
        "addWatch",
        "[-m mode] path # optional mode is one of [PERSISTENT, PERSISTENT_RECURSIVE] - default is PERSISTENT_RECURSIVE",
    ),
    ("addauth", "scheme auth"),
    ("close", ""),
    ("config", "[-c] [-w] [-s]"),
    ("connect", "host:port"),
    ("create", "[-s] [-e] [-c] [-t ttl] path [data] [acl]"),
    ("delete", "[-v version] path"),
    ("deleteall", "path [-b batch size]"),
    ("delquota", "[-n|-b|-N|-B] path"),
    ("exit", ""),
    ("get", "[-s] [-w] path"),
    ("getAcl", "[-s] path"),
    ("getAllChildrenNumber", "path"),
    ("getEphemerals", "path"),
    ("help", ""),
    ("history", ""),
    ("listquota", "path"),
    ("ls", "[-s] [-w] [-R] path"),
    ("printwatches", "on|off"),
    ("quit", ""),
    (
        "reconfig",
        "[-s] [-v version] [[-file path] | [-members serverID=host:port1:port2;port3[,...]*]] | [-add serverId=host:port1:port2;port3[,...]]* [-remove serverId[,...]*]",
    ),
    ("redo", "cmdno"),
    ("removewatches", "path [-c|-d|-a] [-l]"),
    ("set", "[-s] [-v version] path data"),
    ("setAcl", "[-s] [-v version] [-R] path acl"),
    ("setquota", "-n|-b|-N|-B val path"),
    ("stat", "[-w] [-h] path"),
    ("sync", "path"),
    ("tree", "path"),
    ("version", ""),
    ("watch", "[-R] path # streams events until Ctrl-C"),
    ("whoami", ""),
];

fn usage_of(cmd: &str) -> String {
    let opts = COMMANDS
        .iter()
        .find(|(c, _)| *c == cmd)
        .map(|(_, u)| *u)
        .unwrap_or("");
    format!("{cmd} {opts}")
}

const FLAGS_TEXT: &str = "\
usage: corral cli [-server host:port[,host:port...][/chroot]] [-timeout ms] [-r] [--json] [cmd args...]

  -server, --server     servers to connect to (default localhost:2181)
  -timeout, --timeout   session timeout in milliseconds (default 30000)
  -r, --readonly        accept read-only servers
  --json                print results and events as JSON
  cmd args              run one command, print its result and exit (non-zero on error)
";

/// Command-line settings of `corral cli`.
#[derive(Debug, Clone)]
struct Options {
    server: String,
    timeout_ms: u64,
    read_only: bool,
    json: bool,
    command: Vec<String>,
}

fn parse_options(args: &[String]) -> Result<Option<Options>, String> {
    let mut opts = Options {
        server: "localhost:2181".into(),
        timeout_ms: 30_000,
        read_only: false,
        json: false,
        command: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("Error: no argument found for option {name}"))
        };
        match arg.as_str() {
            "-server" | "--server" => opts.server = value(arg)?,
            "-timeout" | "--timeout" => {
                let v = value(arg)?;
                opts.timeout_ms = v
                    .parse()
                    .map_err(|_| format!("-timeout wants milliseconds, not {v:?}"))?;
            }
            "-r" | "--readonly" => opts.read_only = true,
            "--json" | "-json" => opts.json = true,
            // Accepted for zkCli compatibility; the shell always waits for its connection.
            "-waitforconnection" => {}
            "-client-configuration" => {
                value(arg)?;
            }
            "-h" | "--help" => return Ok(None),
            s if s.starts_with('-') => return Err(format!("unknown option {s}\n\n{FLAGS_TEXT}")),
            _ => {
                opts.command.push(arg.clone());
                opts.command.extend(it.cloned());
                break;
            }
        }
    }
    Ok(Some(opts))
}

/// Runs `corral cli` with its arguments (everything after `cli`); returns the exit status.
pub fn run(args: Vec<String>) -> i32 {
    let opts = match parse_options(&args) {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{FLAGS_TEXT}");
            return 0;
        }
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return 1;
        }
    };
    let mut shell = Shell::new(runtime, opts.clone());
    if !opts.command.is_empty() {
        // One command, for scripts: no banner and no session events on stdout.
        shell.events.set_enabled(false);
        shell.connect(&opts.server);
        shell.events.set_enabled(true);
        let code = shell.execute(opts.command.clone());
        shell.shutdown();
        return code;
    }
    outln(&format!("Connecting to {}", opts.server));
    shell.connect(&opts.server);
    let code = if std::io::stdin().is_terminal() {
        shell.interactive()
    } else {
        shell.piped()
    };
    shell.shutdown();
    code
}

/// Prints a line on stdout; a closed stdout (`| head`) is not an error worth a panic.
fn outln(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{s}");
    let _ = out.flush();
}

/// Prints text that already ends in a newline (Stat blocks).
fn out(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes());
    let _ = out.flush();
}

fn errln(s: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{s}");
}

fn json_out(v: &Value) {
    outln(&v.to_string());
}

/// Why a command failed; each prints as one line.
#[derive(Debug)]
enum CmdError {
    /// Bad arguments: the message (usually the usage line).
    Usage(String),
    /// The command ran and failed.
    Failed(String),
    /// No such command.
    NotFound(String),
    /// The session is closed (zkCli says so on stdout).
    NotConnected,
}

type CmdResult = Result<(), CmdError>;

/// zkCli's one-line message for a failed operation on `path`.
fn describe(e: &Error, path: &str) -> String {
    match e {
        Error::Zk(z) => match z {
            ZkError::NoNode => format!("Node does not exist: {path}"),
            ZkError::NoChildrenForEphemerals => format!("Ephemerals cannot have children: {path}"),
            ZkError::NodeExists => format!("Node already exists: {path}"),
            ZkError::NotEmpty => format!("Node not empty: {path}"),
            ZkError::NotReadOnly => format!("Not a read-only call: {path}"),
            ZkError::InvalidAcl => format!("Acl is not valid : {path}"),
            ZkError::NoAuth => format!("Insufficient permission : {path}"),
            ZkError::BadArguments => format!("Arguments are not valid : {path}"),
            ZkError::BadVersion => format!("version No is not valid : {path}"),
            ZkError::QuotaExceeded => format!("Quota has exceeded : {path}"),
            other => format!("KeeperErrorCode = {other} for {path}"),
        },
        // Rejected before sending: the client's explanation (bad path, empty ACL) says it.
        Error::BadArguments(msg) => msg.clone(),
        Error::ConnectionLoss => format!("KeeperErrorCode = ConnectionLoss for {path}"),
        Error::SessionExpired => format!("KeeperErrorCode = Session expired for {path}"),
        Error::AuthFailed => format!("KeeperErrorCode = AuthFailed for {path}"),
        Error::Timeout => format!("KeeperErrorCode = OperationTimeout for {path}"),
        Error::Closed => "Not connected".to_string(),
        other => format!("{other} ({path})"),
    }
}

fn failed(path: &str) -> impl Fn(Error) -> CmdError + '_ {
    move |e| CmdError::Failed(describe(&e, path))
}

/// The ACL argument of `create` and `setAcl`: entries it skips are reported on stderr, and
/// one without any valid entry is refused.
fn acl_arg(text: &str, path: &str) -> Result<Vec<Acl>, CmdError> {
    let mut warnings = Vec::new();
    let acl = parse::parse_acl(text, &mut warnings);
    for w in warnings {
        errln(&w);
    }
    if acl.is_empty() {
        return Err(CmdError::Failed(format!("Acl is not valid : {path}")));
    }
    Ok(acl)
}

/// The shell's session: a background task connects (and keeps retrying) while the prompt
/// shows CONNECTING.
struct Conn {
    slot: watch::Receiver<Option<Client>>,
    task: tokio::task::JoinHandle<()>,
}

struct Shell {
    rt: Runtime,
    opts: Options,
    events: Events,
    conn: Option<Conn>,
    host: String,
    /// The client completion uses (the current session, once connected).
    current: Arc<Mutex<Option<Client>>>,
    /// zkCli's numbered history of this run (`history`, `redo`).
    history: Vec<String>,
    print_watches: bool,
    quit: bool,
    exit_code: i32,
}

impl Shell {
    fn new(rt: Runtime, opts: Options) -> Shell {
        let events = {
            let _guard = rt.enter();
            Events::start(opts.json)
        };
        Shell {
            rt,
            events,
            conn: None,
            host: opts.server.clone(),
            current: Arc::new(Mutex::new(None)),
            history: Vec::new(),
            print_watches: true,
            quit: false,
            exit_code: 0,
            opts,
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.opts.timeout_ms)
    }

    /// Closes the current session (if any) and starts connecting to `host`, waiting for the
    /// connection up to the session timeout (it keeps trying in the background after that).
    fn connect(&mut self, host: &str) {
        self.close_session();
        self.host = host.to_string();
        let (tx, rx) = watch::channel(None);
        let builder = Client::builder(host)
            .session_timeout(self.timeout())
            .read_only(self.opts.read_only);
        let events = self.events.clone();
        let current = self.current.clone();
        let task = self.rt.spawn(async move {
            loop {
                match builder.clone().connect().await {
                    Ok(client) => {
                        events.follow_session(&client);
                        *current.lock().unwrap() = Some(client.clone());
                        let _ = tx.send(Some(client));
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "connect attempt failed");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        let mut slot = rx.clone();
        // Long enough for a live server to answer (so its SyncConnected event comes before the
        // prompt); a dead one should not hold the prompt back: commands wait on their own.
        let wait = self.timeout().min(Duration::from_secs(5));
        self.rt.block_on(async {
            let _ = tokio::time::timeout(wait, slot.wait_for(|c| c.is_some())).await;
        });
        self.conn = Some(Conn { slot: rx, task });
        self.flush_events();
    }

    fn close_session(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.task.abort();
            let client = conn.slot.borrow().clone();
            if let Some(client) = client {
                self.rt.block_on(client.close());
            }
            self.events.clear();
            *self.current.lock().unwrap() = None;
            self.flush_events();
        }
    }

    fn shutdown(mut self) {
        // Leaving is not an event worth printing (zkCli exits before it could).
        self.events.set_enabled(false);
        self.flush_events();
        self.close_session();
        self.rt.shutdown_timeout(Duration::from_secs(1));
    }

    /// The connected client, waiting (up to the session timeout) for a pending connection.
    fn client(&mut self, path: &str) -> Result<Client, CmdError> {
        let Some(conn) = &self.conn else {
            return Err(CmdError::NotConnected);
        };
        let mut slot = conn.slot.clone();
        let wait = self.timeout();
        let client = self.rt.block_on(async {
            match tokio::time::timeout(wait, slot.wait_for(|c| c.is_some())).await {
                Ok(Ok(c)) => c.clone(),
                _ => None,
            }
        });
        match client {
            Some(c) if c.state().is_terminal() => Err(CmdError::NotConnected),
            Some(c) => Ok(c),
            None => Err(CmdError::Failed(format!(
                "KeeperErrorCode = ConnectionLoss for {path}"
            ))),
        }
    }

    fn state_name(&self) -> &'static str {
        match &self.conn {
            None => "CLOSED",
            Some(conn) => match &*conn.slot.borrow() {
                None => "CONNECTING",
                Some(c) => format::state_name(c.state()),
            },
        }
    }

    fn prompt(&self) -> String {
        format!(
            "[zk: {}({}) {}] ",
            self.host,
            self.state_name(),
            self.history.len()
        )
    }

    fn flush_events(&self) {
        self.rt.block_on(self.events.flush());
    }

    /// Runs one parsed line; prints its errors; returns the exit status.
    fn execute(&mut self, words: Vec<String>) -> i32 {
        // Like zkCli, `quit` leaves with the status of the command before it.
        let leaving = matches!(words[0].as_str(), "quit" | "exit");
        let result = self.dispatch(words);
        self.flush_events();
        let code = match result {
            Ok(()) => 0,
            Err(CmdError::Usage(msg)) | Err(CmdError::Failed(msg)) => {
                errln(&msg);
                1
            }
            Err(CmdError::NotConnected) => {
                outln("Not connected");
                1
            }
            Err(CmdError::NotFound(cmd)) => {
                errln(&format!(
                    "Command not found: {cmd} (`help` lists the commands)"
                ));
                127
            }
        };
        if !leaving {
            self.exit_code = code;
        }
        code
    }

    /// Runs a line typed (or piped) into the shell, recording it in the numbered history.
    fn execute_line(&mut self, line: &str) {
        let words = parse::tokenize(line);
        if words.is_empty() {
            return;
        }
        self.history.push(line.to_string());
        self.execute(words);
    }

    fn piped(&mut self) -> i32 {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            self.execute_line(&line);
            if self.quit {
                break;
            }
        }
        self.exit_code
    }

    fn interactive(&mut self) -> i32 {
        use rustyline::error::ReadlineError;
        let config = rustyline::Config::builder()
            .auto_add_history(true)
            .max_history_size(10_000)
            .map(|b| b.build())
            .unwrap_or_default();
        let mut editor: rustyline::Editor<complete::ShellHelper, rustyline::history::FileHistory> =
            match rustyline::Editor::with_config(config) {
                Ok(e) => e,
                Err(e) => {
                    errln(&format!(
                        "line editing unavailable ({e}); reading plain lines"
                    ));
                    return self.piped();
                }
            };
        editor.set_helper(Some(complete::ShellHelper {
            client: self.current.clone(),
            runtime: self.rt.handle().clone(),
        }));
        let history_file = history_path();
        if let Some(path) = &history_file {
            let _ = editor.load_history(path);
        }
        if let Ok(printer) = editor.create_external_printer() {
            self.events.set_printer(Some(Box::new(printer)));
        }
        outln("Welcome to Corral! `help` lists the commands; Tab completes commands and paths.");
        loop {
            let prompt = self.prompt();
            match editor.readline(&prompt) {
                Ok(line) => {
                    self.execute_line(&line);
                    if let Some(path) = &history_file {
                        let _ = editor.save_history(path);
                    }
                    if self.quit {
                        break;
                    }
                }
                // Ctrl-C abandons the line being typed, as in a shell.
                Err(ReadlineError::Interrupted) => continue,
                Err(ReadlineError::Eof) => break,
                Err(e) => {
                    errln(&format!("reading input: {e}"));
                    break;
                }
            }
        }
        self.events.set_printer(None);
        self.exit_code
    }

    fn dispatch(&mut self, words: Vec<String>) -> CmdResult {
        let cmd = words[0].clone();
        match cmd.as_str() {
            "quit" | "exit" => {
                self.quit = true;
                Ok(())
            }
            "help" | "?" => {
                self.help();
                Ok(())
            }
            "history" => {
                let n = self.history.len();
                for (i, line) in self.history.iter().enumerate().skip(n.saturating_sub(11)) {
                    outln(&format!("{i} - {line}"));
                }
                Ok(())
            }
            "redo" => self.redo(&words),
            "printwatches" => {
                match words.get(1).map(String::as_str) {
                    None => outln(&format!(
                        "printwatches is {}",
                        if self.print_watches { "on" } else { "off" }
                    )),
                    Some(v) => {
                        self.print_watches = v == "on";
                        self.events.set_enabled(self.print_watches);
                    }
                }
                Ok(())
            }
            "connect" => {
                let host = words.get(1).cloned().unwrap_or_else(|| self.host.clone());
                self.connect(&host);
                Ok(())
            }
            "close" => {
                if let Some(conn) = &self.conn {
                    let client = conn.slot.borrow().clone();
                    conn.task.abort();
                    if let Some(c) = client {
                        self.rt.block_on(c.close());
                    }
                    self.events.clear();
                }
                Ok(())
            }
            "version" => {
                outln(&format!(
                    "corral cli version: {}",
                    env!("CARGO_PKG_VERSION")
                ));
                Ok(())
            }
            "ls" => self.ls(&words),
            "get" => self.get(&words),
            "stat" => self.stat(&words),
            "create" => self.create(&words),
            "set" => self.set(&words),
            "delete" => self.delete(&words),
            "deleteall" | "rmr" => self.deleteall(&words),
            "addWatch" => self.add_watch(&words),
            "removewatches" => self.remove_watches(&words),
            "getAcl" => self.get_acl(&words),
            "setAcl" => self.set_acl(&words),
            "addauth" => self.addauth(&words),
            "sync" => self.sync(&words),
            "whoami" => self.whoami(&words),
            "getEphemerals" => self.get_ephemerals(&words),
            "getAllChildrenNumber" => self.all_children_number(&words),
            "tree" => self.tree(&words),
            "watch" => self.watch(&words),
            "setquota" => self.setquota(&words),
            "listquota" => self.listquota(&words),
            "delquota" => self.delquota(&words),
            "config" => self.config(&words),
            "reconfig" => self.reconfig(&words),
            _ => Err(CmdError::NotFound(cmd)),
        }
    }

    fn help(&self) {
        outln("corral cli -server host:port[/chroot] [-timeout ms] [--json] cmd args");
        for (cmd, opts) in COMMANDS {
            outln(&format!("\t{cmd} {opts}"));
        }
    }

    fn redo(&mut self, words: &[String]) -> CmdResult {
        // The `redo` line itself is already the newest history entry.
        let current = self.history.len() - 1;
        let index = words
            .get(1)
            .and_then(|w| w.parse::<usize>().ok())
            .filter(|i| *i < current)
            .ok_or_else(|| CmdError::Usage("Command index out of range".into()))?;
        let line = self.history[index].clone();
        let redo = parse::tokenize(&line);
        if redo[0] == "redo" {
            return Err(CmdError::Usage("No redoing redos".into()));
        }
        self.history[current] = line;
        self.dispatch(redo)
    }

    /// Flags of `cmd`, or its usage line.
    fn flags(&self, words: &[String], spec: FlagSpec, min_args: usize) -> Result<Parsed, CmdError> {
        let parsed = parse_flags(words, spec).map_err(CmdError::Usage)?;
        if parsed.positional.len() < min_args {
            return Err(CmdError::Usage(usage_of(&words[0])));
        }
        Ok(parsed)
    }

    /// zkCli 3.4's `cmd path watch`: a third word means "watch", with a deprecation notice.
    fn legacy_watch(&self, p: &mut Parsed, modern: &str) -> bool {
        if p.positional.len() > 2 {
            errln(&format!(
                "'{} path [watch]' has been deprecated. Please use '{modern}' instead.",
                p.positional[0]
            ));
            p.positional.truncate(2);
            true
        } else {
            false
        }
    }

    /// Runs `read` or, when `watch` names a kind, `read_w`, keeping the one-shot watch that
    /// leaves on `path` (its event is printed, and `removewatches` can drop it).
    fn watched_read<T>(
        &self,
        path: &str,
        watch: Option<WatchKind>,
        read: impl Future<Output = Result<T, Error>>,
        read_w: impl Future<Output = Result<(T, OneshotWatch), Error>>,
    ) -> Result<T, CmdError> {
        self.rt.block_on(async {
            let Some(kind) = watch else {
                return read.await.map_err(failed(path));
            };
            let (value, w) = read_w.await.map_err(failed(path))?;
            self.events.add_oneshot(path, kind, w);
            Ok(value)
        })
    }

    /// A Stat printed on its own (`-s` of the writing commands).
    fn print_stat(&self, stat: &Stat) {
        if self.opts.json {
            json_out(&format::stat_json(stat));
        } else {
            out(&format::stat_text(stat));
        }
    }

    fn ls(&mut self, words: &[String]) -> CmdResult {
        let mut p = self.flags(
            words,
            &[('s', false), ('w', false), ('R', false), ('?', false)],
            2,
        )?;
        let watch = p.has('w') | self.legacy_watch(&mut p, "ls [-w] path");
        let path = p.positional[1].clone();
        let client = self.client(&path)?;
        let events = self.events.clone();
        let json = self.opts.json;
        if p.has('R') {
            let paths = self.rt.block_on(async {
                let mut out = Vec::new();
                if watch {
                    let (_, _, w) = client.get_data_w(&path).await.map_err(failed(&path))?;
                    events.add_oneshot(&path, WatchKind::Data, w);
                } else {
                    client.get_data(&path).await.map_err(failed(&path))?;
                }
                out.push(path.clone());
                visit_dfs(&client, &path, watch.then_some(&events), &mut out).await?;
                Ok::<_, CmdError>(out)
            })?;
            if json {
                json_out(&json!(paths));
            } else {
                for p in paths {
                    outln(&p);
                }
            }
            return Ok(());
        }
        let (mut children, stat) = self.watched_read(
            &path,
            watch.then_some(WatchKind::Child),
            client.children(&path),
            client.children_w(&path).map_ok(|(c, s, w)| ((c, s), w)),
        )?;
        children.sort();
        if json {
            if p.has('s') {
                json_out(&json!({"children": children, "stat": format::stat_json(&stat)}));
            } else {
                json_out(&json!(children));
            }
        } else {
            outln(&format!("[{}]", children.join(", ")));
            if p.has('s') {
                out(&format::stat_text(&stat));
            }
        }
        Ok(())
    }

    fn get(&mut self, words: &[String]) -> CmdResult {
        let mut p = self.flags(words, &[('s', false), ('w', false)], 2)?;
        let watch = p.has('w') | self.legacy_watch(&mut p, "get [-s] [-w] path");
        let path = p.positional[1].clone();
        let client = self.client(&path)?;
        let (data, stat) = self.watched_read(
            &path,
            watch.then_some(WatchKind::Data),
            client.get_data_opt(&path),
            client.get_data_opt_w(&path).map_ok(|(d, s, w)| ((d, s), w)),
        )?;
        // Null data prints as `null`, as zkCli does.
        let text = match &data {
            Some(d) => String::from_utf8_lossy(d),
            None => "null".into(),
        };
        if self.opts.json {
            let mut v = json!({"path": path, "data": text});
            if p.has('s') {
                v["stat"] = format::stat_json(&stat);
            }
            json_out(&v);
        } else {
            outln(&text);
            if p.has('s') {
                out(&format::stat_text(&stat));
            }
        }
        Ok(())
    }

    fn stat(&mut self, words: &[String]) -> CmdResult {
        let mut p = self.flags(words, &[('w', false), ('h', false)], 2)?;
        let watch = p.has('w') | self.legacy_watch(&mut p, "stat [-w] path");
        let path = p.positional[1].clone();
        let client = self.client(&path)?;
        let stat = self.watched_read(
            &path,
            watch.then_some(WatchKind::Data),
            client.exists(&path),
            client.exists_w(&path),
        )?;
        let stat = stat.ok_or_else(|| CmdError::Failed(format!("Node does not exist: {path}")))?;
        if self.opts.json {
            json_out(&format::stat_json(&stat));
        } else if p.has('h') {
            out(&format::stat_human(&stat, now_ms()));
        } else {
            out(&format::stat_text(&stat));
        }
        Ok(())
    }

    fn create(&mut self, words: &[String]) -> CmdResult {
        let p = self.flags(
            words,
            &[('e', false), ('s', false), ('c', false), ('t', true)],
            2,
        )?;
        let (e, s, c) = (p.has('e'), p.has('s'), p.has('c'));
        let ttl = match p.value('t') {
            None => None,
            Some(v) => Some(
                v.parse::<i64>()
                    .map_err(|_| CmdError::Usage("-t argument must be a long value".into()))?,
            ),
        };
        if c && (e || s) {
            return Err(CmdError::Usage(
                "-c cannot be combined with -s or -e. Containers cannot be ephemeral or sequential."
                    .into(),
            ));
        }
        if ttl.is_some() && e {
            return Err(CmdError::Usage(
                "TTLs cannot be used with Ephemeral znodes".into(),
            ));
        }
        if ttl.is_some() && c {
            return Err(CmdError::Usage(
                "TTLs cannot be used with Container znodes".into(),
            ));
        }
        if let Some(t) = ttl {
            // The TTL shares the ephemeral-owner field with a tag byte: 40 bits of it.
            const MAX_TTL_MS: i64 = 0xff_ffff_ffff;
            if t <= 0 || t > MAX_TTL_MS {
                return Err(CmdError::Usage(format!(
                    "ttl must be positive and cannot be larger than: {MAX_TTL_MS}"
                )));
            }
        }
        let mode = match (e, s, c, ttl.is_some()) {
            (true, true, _, _) => CreateMode::EphemeralSequential,
            (true, false, _, _) => CreateMode::Ephemeral,
            (false, true, _, true) => CreateMode::PersistentSequentialWithTtl,
            (false, true, _, false) => CreateMode::PersistentSequential,
            (false, false, true, _) => CreateMode::Container,
            (false, false, false, true) => CreateMode::PersistentWithTtl,
            (false, false, false, false) => CreateMode::Persistent,
        };
        let path = p.positional[1].clone();
        // Without a data argument zkCli stores null data (`get` then prints `null`).
        let data = p.arg(2).map(|d| d.as_bytes().to_vec());
        let mut options = CreateOptions::new(mode);
        if let Some(acl_text) = p.arg(3) {
            options = options.acl(acl_arg(acl_text, &path)?);
        }
        if let Some(t) = ttl {
            options.ttl_ms = Some(t);
        }
        let client = self.client(&path)?;
        let (created, _) = self
            .rt
            .block_on(client.create_opt(&path, data.as_deref(), options))
            .map_err(failed(&path))?;
        if self.opts.json {
            json_out(&json!({"created": created}));
        } else {
            errln(&format!("Created {created}"));
        }
        Ok(())
    }

    fn version_flag(p: &Parsed) -> Result<Option<i32>, CmdError> {
        p.value('v')
            .map(|v| {
                v.parse::<i32>()
                    .map_err(|_| CmdError::Usage("-v argument must be an int value".into()))
            })
            .transpose()
    }

    fn set(&mut self, words: &[String]) -> CmdResult {
        let p = self.flags(words, &[('s', false), ('v', true)], 3)?;
        let version = Self::version_flag(&p)?;
        let path = p.positional[1].clone();
        let client = self.client(&path)?;
        let stat = self
            .rt
            .block_on(client.set_data(&path, p.positional[2].as_bytes(), version))
            .map_err(failed(&path))?;
        if p.has('s') {
            self.print_stat(&stat);
        }
        Ok(())
    }

    fn delete(&mut self, words: &[String]) -> CmdResult {
        let p = self.flags(words, &[('v', true)], 2)?;
        let version = Self::version_flag(&p)?;
        let path = p.positional[1].clone();
        let client = self.client(&path)?;
        self.rt
            .block_on(client.delete(&path, version))
            .map_err(failed(&path))
    }

    fn deleteall(&mut self, words: &[String]) -> CmdResult {
        let p = self.flags(words, &[('b', true)], 2)?;
        if let Some(b) = p.value('b') {
            b.parse::<i32>()
                .map_err(|_| CmdError::Usage("-b argument must be an int value".into()))?;
        }
        let path = p.positional[1].clone();
        let client = self.client(&path)?;
        self.rt.block_on(async {
            // Breadth-first listing, deleted deepest-first: children go before parents.
            let mut tree = vec![path.clone()];
            let mut i = 0;
            while i < tree.len() {
                let node = tree[i].clone();
                let children = match client.children(&node).await {
                    Ok((c, _)) => c,
                    Err(Error::Zk(ZkError::NoNode)) if i > 0 => Vec::new(),
                    Err(e) => return Err(failed(&node)(e)),
                };
                let base = if node == "/" { "" } else { node.as_str() };
                tree.extend(children.iter().map(|c| format!("{base}/{c}")));
                i += 1;
            }
            for node in tree.iter().rev() {
                match client.delete(node, None).await {
                    Ok(()) | Err(Error::Zk(ZkError::NoNode)) => {}
                    Err(e) => return Err(failed(node)(e)),
                }
            }
            Ok(())
        })
    }

    fn add_watch(&mut self, words: &[String]) -> CmdResult {
        let p = self.flags(words, &[('m', true)], 2)?;
        if p.positional.len() != 2 {
            return Err(CmdError::Usage(usage_of("addWatch")));
        }
        let mode = match p.value('m').map(str::to_ascii_uppercase).as_deref() {
            None | Some("PERSISTENT_RECURSIVE") => WatchMode::Recursive,
            Some("PERSISTENT") => WatchMode::NonRecursive,
            Some(_) => return Err(CmdError::Usage(usage_of("addWatch"))),
        };
        let path = p.positional[1].clone();
        let client = self.client(&path)?;
        let w = self
            .rt
            .block_on(client.watch(&path, mode))
            .map_err(failed(&path))?;
        let kind = match mode {
            WatchMode::Recursive => WatchKind::PersistentRecursive,
            WatchMode::NonRecursive => WatchKind::Persistent,
        };
        self.events.add_persistent(&path, kind, w);
        Ok(())
    }

    fn remove_watches(&mut self, words: &[String]) -> CmdResult {
        let p = self.flags(
            words,
            &[
                ('c', false),
                ('d', false),
                ('a', false),
                ('p', false),
                ('r', false),
                ('l', false),
            ],
            2,
        )?;
        let path = p.positional[1].clone();
        // The path is checked like every other; the watches themselves are the shell's own.
        corral_client::path::validate_path(&path, false)
            .map_err(|e| CmdError::Failed(describe(&e, &path)))?;
        let wanted: fn(WatchKind) -> bool = if p.has('c') {
            |k| k == WatchKind::Child
        } else if p.has('d') {
            |k| k == WatchKind::Data
        } else if p.has('p') {
            |k| k == WatchKind::Persistent
        } else if p.has('r') {
            |k| k == WatchKind::PersistentRecursive
        } else {
            |_| true
        };
        // The shell's own watchers first (it prints their removal events), then the client's
        // registrations and, unless -l, the server's watches. Persistent watches go with
        // their streams.
        let removed_here = self.events.remove(&path, wanted);
        let one_shot_kind = if p.has('c') {
            Some(corral_proto::WatcherType::Children)
        } else if p.has('d') {
            Some(corral_proto::WatcherType::Data)
        } else if p.has('p') || p.has('r') {
            None
        } else {
            Some(corral_proto::WatcherType::Any)
        };
        let removed_there = match (one_shot_kind, self.client(&path)) {
            (Some(kind), Ok(client)) => self
                .rt
                .block_on(client.remove_watches(&path, kind, p.has('l')))
                .is_ok(),
            _ => false,
        };
        if removed_here || removed_there {
            Ok(())
        } else {
            Err(CmdError::Failed(format!(
                "KeeperErrorCode = No such watcher for {path}"
            )))
        }
    }

    fn get_acl(&mut self, words: &[String]) -> CmdResult {
        let p = self.flags(words, &[('s', false)], 2)?;
        let path = p.positional[1].clone();
        let client = self.client(&path)?;
        let (acl, stat) = self
            .rt
            .block_on(client.get_acl(&path))
            .map_err(failed(&path))?;
        if self.opts.json {
            let mut v = json!({"path": path, "acl": format::acl_json(&acl)});
            if p.has('s') {
                v["stat"] = format::stat_json(&stat);
            }
            json_out(&v);
            return Ok(());
        }
        for a in &acl {
            out(&format::acl_text(a));
        }
        if p.has('s') {
            out(&format::stat_text(&stat));
        }
        Ok(())
    }

    fn set_acl(&mut self, words: &[String]) -> CmdResult {
        let p = self.flags(words, &[('s', false), ('v', true), ('R', false)], 3)?;
        let version = Self::version_flag(&p)?;
        let path = p.positional[1].clone();
        let acl = acl_arg(&p.positional[2], &path)?;
        let client = self.client(&path)?;
        if p.has('R') {
            return self.rt.block_on(async {
                client.get_data(&path).await.map_err(failed(&path))?;
                let mut all = vec![path.clone()];
                visit_dfs(&client, &path, None, &mut all).await?;
                for node in &all {
                    // zkCli reports a node it cannot change and goes on with the rest.
                    if let Err(e) = client.set_acl(node, &acl, version).await {
                        errln(&describe(&e, node));
                    }
                }
                Ok(())
            });
        }
        let stat = self
            .rt
            .block_on(client.set_acl(&path, &acl, version))
            .map_err(failed(&path))?;
        if p.has('s') {
            self.print_stat(&stat);
        }
        Ok(())
    }

    fn addauth(&mut self, words: &[String]) -> CmdResult {
        if words.len() < 2 {
            return Err(CmdError::Usage(usage_of("addauth")));
        }
        let auth = words.get(2).map(String::as_bytes).unwrap_or(b"");
        let client = self.client("/")?;
        self.rt
            .block_on(client.add_auth(&words[1], auth))
            .map_err(|e| CmdError::Failed(format!("addauth {}: {e}", words[1])))
    }

    fn sync(&mut self, words: &[String]) -> CmdResult {
        let p = self.flags(words, &[], 2)?;
        let path = p.positional[1].clone();
        let client = self.client(&path)?;
        match self.rt.block_on(client.sync(&path)) {
            Ok(()) => {
                outln("Sync is OK");
                Ok(())
            }
            Err(Error::BadArguments(msg)) => Err(CmdError::Failed(msg)),
            Err(e) => Err(CmdError::Failed(format!(
                "Sync has failed. rc={}",
                e.code().code()
            ))),
        }
    }

    fn whoami(&mut self, _words: &[String]) -> CmdResult {
        let client = self.client("/")?;
        let ids = self
            .rt
            .block_on(client.who_am_i())
            .map_err(|e| CmdError::Failed(describe(&e, "/")))?;
        if self.opts.json {
            json_out(&Value::Array(
                ids.iter()
                    .map(|i| json!({"scheme": i.auth_scheme, "user": i.user}))
                    .collect(),
            ));
            return Ok(());
        }
        outln("Auth scheme: User");
        for i in ids {
            outln(&format!("{}: {}", i.auth_scheme, i.user));
        }
        Ok(())
    }

    fn get_ephemerals(&mut self, words: &[String]) -> CmdResult {
        let path = words.get(1).cloned().unwrap_or_else(|| "/".into());
        let client = self.client(&path)?;
        let mut list = self
            .rt
            .block_on(client.get_ephemerals(&path))
            .map_err(failed(&path))?;
        list.sort();
        if self.opts.json {
            json_out(&json!(list));
        } else {
            outln(&format!("[{}]", list.join(", ")));
        }
        Ok(())
    }

    fn all_children_number(&mut self, words: &[String]) -> CmdResult {
        let p = self.flags(words, &[], 2)?;
        let path = p.positional[1].clone();
        let client = self.client(&path)?;
        let n = self
            .rt
            .block_on(client.all_children_number(&path))
            .map_err(failed(&path))?;
        outln(&n.to_string());
        Ok(())
    }

    fn tree(&mut self, words: &[String]) -> CmdResult {
        let path = words.get(1).cloned().unwrap_or_else(|| "/".into());
        let client = self.client(&path)?;
        let json = self.opts.json;
        self.rt.block_on(async {
            client
                .exists(&path)
                .await
                .map_err(failed(&path))?
                .ok_or_else(|| CmdError::Failed(format!("Node does not exist: {path}")))?;
            if json {
                let mut out = std::io::BufWriter::new(std::io::stdout());
                let list = |p: String| {
                    let client = client.clone();
                    async move { sorted_children(&client, &p).await }
                };
                write_tree_json(&path, list, &mut out)
                    .await
                    .and_then(|()| writeln!(out))
                    .and_then(|()| out.flush())
                    .map_err(|e| CmdError::Failed(format!("writing the tree: {e}")))?;
            } else {
                outln(&path);
                draw_tree(&client, &path, "").await;
            }
            Ok(())
        })
    }

    fn watch(&mut self, words: &[String]) -> CmdResult {
        let p = self.flags(words, &[('R', false)], 2)?;
        let path = p.positional[1].clone();
        let mode = if p.has('R') {
            WatchMode::Recursive
        } else {
            WatchMode::NonRecursive
        };
        let client = self.client(&path)?;
        let json = self.opts.json;
        self.rt.block_on(async {
            let mut w = client.watch(&path, mode).await.map_err(failed(&path))?;
            errln(&format!("watching {path}; Ctrl-C stops"));
            loop {
                tokio::select! {
                    ev = w.next() => match ev {
                        Some(corral_client::WatchEvent::Node(ev)) => {
                            let shown = ShownEvent::node(&ev);
                            if json { json_out(&shown.json()) } else { outln(&shown.line()) }
                        }
                        Some(corral_client::WatchEvent::Session(s)) => {
                            if let Some(shown) = ShownEvent::session(s) {
                                if json { json_out(&shown.json()) } else { outln(&shown.line()) }
                            }
                        }
                        Some(corral_client::WatchEvent::MayHaveMissed) => {
                            errln(&format!("events under {path} may have been missed while disconnected"));
                        }
                        None => return Err(CmdError::Failed("the session ended".into())),
                    },
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                }
            }
        })
    }
}

/// zkCli's recursive listing order: a node's sorted children, then each child's subtree.
async fn visit_dfs(
    client: &Client,
    path: &str,
    watch: Option<&Events>,
    out: &mut Vec<String>,
) -> Result<(), CmdError> {
    // An explicit stack instead of async recursion; children are pushed in reverse so the
    // first child's subtree is walked first.
    let mut stack = vec![path.to_string()];
    while let Some(node) = stack.pop() {
        let listed = match watch {
            Some(events) => match client.children_w(&node).await {
                Ok((c, _, w)) => {
                    events.add_oneshot(&node, WatchKind::Child, w);
                    Ok(c)
                }
                Err(e) => Err(e),
            },
            None => client.children(&node).await.map(|(c, _)| c),
        };
        let mut children = match listed {
            Ok(c) => c,
            // Deleted while we walked: nothing under it any more.
            Err(Error::Zk(ZkError::NoNode)) => continue,
            Err(e) => return Err(failed(&node)(e)),
        };
        children.sort();
        let base = if node == "/" { "" } else { node.as_str() };
        let paths: Vec<String> = children.iter().map(|c| format!("{base}/{c}")).collect();
        out.extend(paths.iter().cloned());
        stack.extend(paths.into_iter().rev());
    }
    Ok(())
}

async fn sorted_children(client: &Client, path: &str) -> Vec<String> {
    let mut c = client
        .children(path)
        .await
        .map(|(c, _)| c)
        .unwrap_or_default();
    c.sort();
    c
}

/// Draws the subtree under `path` with box-drawing branches.
async fn draw_tree(client: &Client, path: &str, indent: &str) {
    enum Item {
        Line(String),
        Expand { path: String, indent: String },
    }
    // An explicit stack instead of async recursion; items are pushed in reverse so that each
    // child's line comes out just before its own subtree.
    let mut stack = vec![Item::Expand {
        path: path.to_string(),
        indent: indent.to_string(),
    }];
    while let Some(item) = stack.pop() {
        let (node, indent) = match item {
            Item::Line(text) => {
                outln(&text);
                continue;
            }
            Item::Expand { path, indent } => (path, indent),
        };
        let children = sorted_children(client, &node).await;
        let base = if node == "/" { "" } else { node.as_str() };
        let n = children.len();
        for (i, name) in children.iter().enumerate().rev() {
            let last = i + 1 == n;
            let (branch, sub) = if last {
                ("\u{2514}\u{2500}\u{2500} ", "    ")
            } else {
                ("\u{251c}\u{2500}\u{2500} ", "\u{2502}   ")
            };
            stack.push(Item::Expand {
                path: format!("{base}/{name}"),
                indent: format!("{indent}{sub}"),
            });
            stack.push(Item::Line(format!("{indent}{branch}{name}")));
        }
    }
}

/// Writes the subtree under `root` as one JSON object, `{"<root>":{"<child>":{...},...}}`,
/// children in sorted order, as it is listed.
///
/// Streamed with an explicit stack: a nested `serde_json::Value` recurses once per level when
/// serialized and dropped, so a deep enough chain of nodes would overflow the stack. Memory is
/// the pending siblings of the current path, not the whole tree.
async fn write_tree_json<W, F, Fut>(root: &str, mut list: F, out: &mut W) -> std::io::Result<()>
where
    W: Write,
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Vec<String>>,
{
    enum Item {
        /// A node to open: its key (the name, or the root's path) and whether a comma goes
        /// before it.
        Open {
            path: String,
            key: String,
            first: bool,
        },
        Close,
    }
    out.write_all(b"{")?;
    let mut stack = vec![Item::Open {
        path: root.to_string(),
        key: root.to_string(),
        first: true,
    }];
    while let Some(item) = stack.pop() {
        let (path, key, first) = match item {
            Item::Close => {
                out.write_all(b"}")?;
                continue;
            }
            Item::Open { path, key, first } => (path, key, first),
        };
        if !first {
            out.write_all(b",")?;
        }
        // A string's encoding does not recurse.
        serde_json::to_writer(&mut *out, &key).map_err(std::io::Error::from)?;
        out.write_all(b":{")?;
        stack.push(Item::Close);
        let children = list(path.clone()).await;
        let base = if path == "/" { "" } else { path.as_str() };
        // Pushed in reverse so the first child is written first.
        for (i, name) in children.into_iter().enumerate().rev() {
            stack.push(Item::Open {
                path: format!("{base}/{name}"),
                key: name,
                first: i == 0,
            });
        }
    }
    out.write_all(b"}")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `~/.corral_history`.
fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".corral_history"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_client::EventType;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn zkcli_flags() {
        let o = parse_options(&args("-server h:1/app -timeout 500 ls -R /"))
            .unwrap()
            .unwrap();
        assert_eq!(o.server, "h:1/app");
        assert_eq!(o.timeout_ms, 500);
        assert_eq!(o.command, args("ls -R /"));
        let o = parse_options(&args("--server h:2 --json"))
            .unwrap()
            .unwrap();
        assert!(o.json && o.command.is_empty());
        assert!(parse_options(&args("-server")).is_err());
        assert!(parse_options(&args("--bogus")).is_err());
    }

    #[test]
    fn messages_match_zkcli() {
        assert_eq!(
            describe(&Error::Zk(ZkError::NoNode), "/x"),
            "Node does not exist: /x"
        );
        assert_eq!(
            describe(&Error::Zk(ZkError::NoAuth), "/x"),
            "Insufficient permission : /x"
        );
        assert_eq!(
            describe(&Error::Zk(ZkError::NoWatcher), "/x"),
            "KeeperErrorCode = No such watcher for /x"
        );
        // Every command has a usage line.
        assert_eq!(usage_of("stat"), "stat [-w] [-h] path");
    }

    #[test]
    fn removal_events_are_named_like_zookeeper() {
        assert_eq!(
            ShownEvent::removed(EventType::DataWatchRemoved, "/a").line(),
            "WatchedEvent state:SyncConnected type:DataWatchRemoved path:/a"
        );
    }

    /// `{"<root>":{"a":{"a":...{}}}}` for a chain of `depth` nodes named `a`.
    fn chain_json(root: &str, depth: usize) -> String {
        format!(
            "{{{}:{{{}{}}}}}",
            serde_json::to_string(root).unwrap(),
            "\"a\":{".repeat(depth),
            "}".repeat(depth)
        )
    }

    /// Runs `f` on a thread with a small stack: a writer that recursed per level would
    /// overflow it long before the depths used here.
    fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn tree_json_is_nested_sorted_and_escaped() {
        let out = on_small_stack(|| {
            let list = |p: String| async move {
                match p.as_str() {
                    "/" => vec!["a".to_string(), "b\"q".to_string()],
                    "/a" => vec!["c".to_string()],
                    _ => vec![],
                }
            };
            let mut out = Vec::new();
            futures::executor::block_on(write_tree_json("/", list, &mut out)).unwrap();
            String::from_utf8(out).unwrap()
        });
        assert_eq!(out, r#"{"/":{"a":{"c":{}},"b\"q":{}}}"#);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v, json!({"/": {"a": {"c": {}}, "b\"q": {}}}));
    }

    #[test]
    fn tree_json_of_a_25000_level_chain_does_not_recurse() {
        const DEPTH: usize = 25_000;
        let out = on_small_stack(|| {
            let list = |p: String| async move {
                // "/a/a/.../a" with DEPTH names has one child less than the bottom.
                if p.len() < 2 * DEPTH {
                    vec!["a".to_string()]
                } else {
                    vec![]
                }
            };
            let mut out = Vec::new();
            futures::executor::block_on(write_tree_json("/", list, &mut out)).unwrap();
            String::from_utf8(out).unwrap()
        });
        assert!(out == chain_json("/", DEPTH), "unexpected output shape");
    }

    #[test]
    fn tree_json_of_a_deep_chain_on_a_server() {
        // Every level's path is sent and checked, so the cost grows with depth squared; the
        // small stack makes this depth deep enough for a recursive writer to fail.
        const DEPTH: usize = 2_000;
        let out = on_small_stack(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let bounded = tokio::time::timeout(Duration::from_secs(120), async {
                    let server = corral_server::testing::TestServer::start().await;
                    let client = Client::builder(&server.connect_string())
                        .connect()
                        .await
                        .unwrap();
                    let mut path = String::new();
                    let mut creates = Vec::with_capacity(DEPTH);
                    for _ in 0..DEPTH {
                        path.push_str("/a");
                        // Pipelined: one connection answers in order, parents first.
                        let (client, path) = (client.clone(), path.clone());
                        creates.push(async move {
                            client
                                .create(&path, b"", corral_client::CreateMode::Persistent)
                                .await
                        });
                    }
                    for r in futures::future::join_all(creates).await {
                        r.unwrap();
                    }
                    let list = |p: String| {
                        let client = client.clone();
                        async move { sorted_children(&client, &p).await }
                    };
                    let mut out = Vec::new();
                    write_tree_json("/a", list, &mut out).await.unwrap();
                    client.close().await;
                    server.stop().await.unwrap();
                    String::from_utf8(out).unwrap()
                });
                bounded.await.expect("the test finished in time")
            })
        });
        // The root "/a" holds the DEPTH - 1 levels below it.
        assert!(
            out == chain_json("/a", DEPTH - 1),
            "unexpected output shape"
        );
    }
}
