//! Parsing of shell lines: zkCli's tokenizer, per-command flags (short options that may appear
//! anywhere, as zkCli's commons-cli parser allows) and its ACL syntax.

use corral_client::{perms, Acl, Id};

/// Splits a line the way zkCli does: whitespace separates words; a word that starts with a
/// quote runs to the matching quote and loses the quotes (`create /a "two words"`).
pub fn tokenize(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else {
            return out;
        };
        let mut word = String::new();
        if first == '"' || first == '\'' {
            chars.next();
            let mut closed = false;
            for c in chars.by_ref() {
                if c == first {
                    closed = true;
                    break;
                }
                word.push(c);
            }
            if closed {
                // zkCli's quoted word ends at the quote; anything glued to it is a new word.
                out.push(word);
                continue;
            }
            // An unterminated quote keeps its quote, as zkCli would leave it.
            word.insert(0, first);
            out.push(word);
            return out;
        }
        while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
            word.push(c);
        }
        out.push(word);
    }
}

/// A command's flags: letter and whether it takes a value.
pub type FlagSpec = &'static [(char, bool)];

/// Flags and positional words of one command line (positional[0] is the command name).
#[derive(Debug, Default)]
pub struct Parsed {
    pub positional: Vec<String>,
    flags: Vec<(char, Option<String>)>,
}

impl Parsed {
    pub fn has(&self, flag: char) -> bool {
        self.flags.iter().any(|(f, _)| *f == flag)
    }
    pub fn value(&self, flag: char) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(f, _)| *f == flag)
            .and_then(|(_, v)| v.as_deref())
    }
    /// The flags in the order they were given.
    pub fn letters(&self) -> impl Iterator<Item = char> + '_ {
        self.flags.iter().map(|(f, _)| *f)
    }
    pub fn arg(&self, i: usize) -> Option<&str> {
        self.positional.get(i).map(String::as_str)
    }
}

fn is_negative_number(s: &str) -> bool {
    s.len() > 1 && s.starts_with('-') && s[1..].parse::<f64>().is_ok()
}

/// Parses `words` (command name first) against `spec`. `-` words are flags unless they are
/// negative numbers; `--` ends the flags; several value-less flags may share a dash (`-se`).
pub fn parse_flags(words: &[String], spec: FlagSpec) -> Result<Parsed, String> {
    let mut parsed = Parsed::default();
    let mut it = words.iter();
    if let Some(name) = it.next() {
        parsed.positional.push(name.clone());
    }
    let mut only_positional = false;
    while let Some(w) = it.next() {
        if only_positional || !w.starts_with('-') || w == "-" || is_negative_number(w) {
            parsed.positional.push(w.clone());
            continue;
        }
        if w == "--" {
            only_positional = true;
            continue;
        }
        let letters: Vec<char> = w[1..].chars().collect();
        let lookup = |c: char| spec.iter().find(|(f, _)| *f == c).map(|(_, v)| *v);
        match lookup(letters[0]) {
            Some(true) => {
                let value = if letters.len() > 1 {
                    letters[1..].iter().collect()
                } else {
                    it.next()
                        .cloned()
                        .ok_or_else(|| format!("Missing argument for option: {}", letters[0]))?
                };
                parsed.flags.push((letters[0], Some(value)));
            }
            Some(false) => {
                for &c in &letters {
                    match lookup(c) {
                        Some(false) => parsed.flags.push((c, None)),
                        _ => return Err(format!("Unrecognized option: {w}")),
                    }
                }
            }
            None => return Err(format!("Unrecognized option: {w}")),
        }
    }
    Ok(parsed)
}

/// Parses zkCli's ACL syntax `scheme:id:perms[,scheme:id:perms...]` (the id may contain
/// colons, as digest ids do). Malformed entries and unknown permission letters are reported
/// in `warnings` and skipped, as zkCli does.
pub fn parse_acl(text: &str, warnings: &mut Vec<String>) -> Vec<Acl> {
    let mut acls = Vec::new();
    for entry in text.split(',') {
        let (Some(first), Some(last)) = (entry.find(':'), entry.rfind(':')) else {
            warnings.push(format!("{entry} does not have the form scheme:id:perm"));
            continue;
        };
        if first == last {
            warnings.push(format!("{entry} does not have the form scheme:id:perm"));
            continue;
        }
        let mut p = 0;
        for c in entry[last + 1..].chars() {
            p |= match c.to_ascii_lowercase() {
                'r' => perms::READ,
                'w' => perms::WRITE,
                'c' => perms::CREATE,
                'd' => perms::DELETE,
                'a' => perms::ADMIN,
                other => {
                    warnings.push(format!("Unknown perm type: {other}"));
                    0
                }
            };
        }
        acls.push(Acl {
            perms: p,
            id: Id {
                scheme: entry[..first].to_string(),
                id: entry[first + 1..last].to_string(),
            },
        });
    }
    acls
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        tokenize(s)
    }

    #[test]
    fn tokenizer_follows_zkcli() {
        assert_eq!(words("  ls   -s /a "), ["ls", "-s", "/a"]);
        assert_eq!(
            words("create /a \"two words\""),
            ["create", "/a", "two words"]
        );
        assert_eq!(words("create /a 'x y' acl"), ["create", "/a", "x y", "acl"]);
        assert_eq!(words("create /a \"\""), ["create", "/a", ""]);
        assert!(words("   ").is_empty());
    }

    #[test]
    fn flags_anywhere_and_values() {
        const SPEC: FlagSpec = &[('s', false), ('e', false), ('t', true)];
        let p = parse_flags(&words("create /a -se -t 100 data"), SPEC).unwrap();
        assert!(p.has('s') && p.has('e'));
        assert_eq!(p.value('t'), Some("100"));
        assert_eq!(p.positional, ["create", "/a", "data"]);
        let p = parse_flags(&words("set /a -1"), SPEC).unwrap();
        assert_eq!(p.positional, ["set", "/a", "-1"]);
        assert!(parse_flags(&words("create -x /a"), SPEC).is_err());
        assert!(parse_flags(&words("create /a -t"), SPEC).is_err());
    }

    #[test]
    fn acl_syntax() {
        let mut warn = Vec::new();
        let acl = parse_acl("digest:u:abc=:cdrwa,world:anyone:r", &mut warn);
        assert!(warn.is_empty());
        assert_eq!(acl.len(), 2);
        assert_eq!(acl[0].id.id, "u:abc=");
        assert_eq!(acl[0].perms, perms::ALL);
        assert_eq!(acl[1].perms, perms::READ);
        let acl = parse_acl("world:anyone,ip:1.2.3.4:rz", &mut warn);
        assert_eq!(acl.len(), 1);
        assert_eq!(
            warn,
            [
                "world:anyone does not have the form scheme:id:perm",
                "Unknown perm type: z"
            ]
        );
    }
}
