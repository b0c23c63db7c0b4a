//! Tab completion for the interactive shell: command names for the first word, znode paths
//! (asked of the server) for words starting with `/`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_client::Client;
use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};
use tokio::runtime::Handle;

use super::COMMANDS;

/// How long completion may wait for the server before offering nothing.
const COMPLETION_TIMEOUT: Duration = Duration::from_secs(2);

pub struct ShellHelper {
    pub client: Arc<Mutex<Option<Client>>>,
    pub runtime: Handle,
}

impl ShellHelper {
    fn children(&self, parent: &str) -> Vec<String> {
        let Some(client) = self.client.lock().unwrap().clone() else {
            return Vec::new();
        };
        let parent = parent.to_string();
        let fut = async move { client.children(&parent).await };
        match self
            .runtime
            .block_on(async { tokio::time::timeout(COMPLETION_TIMEOUT, fut).await })
        {
            Ok(Ok((mut names, _))) => {
                names.sort();
                names
            }
            _ => Vec::new(),
        }
    }
}

/// Splits `/a/b/pre` into the parent to list (`/a/b`) and the prefix to match (`pre`).
pub fn split_path(word: &str) -> (&str, &str) {
    let cut = word.rfind('/').unwrap_or(0);
    let parent = if cut == 0 { "/" } else { &word[..cut] };
    (parent, &word[cut + 1..])
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before
            .rfind(char::is_whitespace)
            .map(|i| i + 1)
            .unwrap_or(0);
        let word = &before[start..];
        let first_word = before[..start].trim().is_empty();
        let pair = |s: String| Pair {
            display: s.clone(),
            replacement: s,
        };
        if first_word {
            let mut names: Vec<&str> = COMMANDS
                .iter()
                .map(|(name, _)| *name)
                .filter(|name| name.starts_with(word))
                .collect();
            names.sort_unstable();
            return Ok((
                start,
                names.into_iter().map(|n| pair(n.to_string())).collect(),
            ));
        }
        if !word.starts_with('/') {
            return Ok((start, Vec::new()));
        }
        let (parent, prefix) = split_path(word);
        let base = if parent == "/" { "" } else { parent };
        let candidates = self
            .children(parent)
            .into_iter()
            .filter(|name| name.starts_with(prefix))
            .map(|name| pair(format!("{base}/{name}")))
            .collect();
        Ok((start, candidates))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}
impl Highlighter for ShellHelper {}
impl Validator for ShellHelper {}
impl Helper for ShellHelper {}

#[cfg(test)]
mod tests {
    use super::split_path;

    #[test]
    fn splits_paths() {
        assert_eq!(split_path("/"), ("/", ""));
        assert_eq!(split_path("/zo"), ("/", "zo"));
        assert_eq!(split_path("/a/b/c"), ("/a/b", "c"));
        assert_eq!(split_path("/a/"), ("/a", ""));
    }
}
