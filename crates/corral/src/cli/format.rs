//! Output formats: zkCli's plain text (Stat lines, ACL lines, watch events, Java-style dates)
//! and the JSON forms of `--json`.

use std::ffi::CStr;

use corral_client::{Acl, EventType, NodeEvent, SessionState, Stat};
use corral_proto::perms;
use serde_json::{json, Value};

/// `Mon May 27 16:09:24 CST 2019`: the text of Java's `Date.toString()`, which zkCli prints
/// for ctime/mtime, in the local time zone (TZ or /etc/localtime, as the JVM uses).
pub fn java_date(epoch_ms: i64) -> String {
    let Some(tm) = local_tm(epoch_ms) else {
        return epoch_ms.to_string();
    };
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{} {} {:02} {:02}:{:02}:{:02} {} {}",
        DAYS[tm.weekday],
        MONTHS[tm.month0],
        tm.day,
        tm.hour,
        tm.minute,
        tm.second,
        tm.zone,
        tm.year
    )
}

/// `2019-05-27 16:09:24.123 CST`, for `stat -h`.
pub fn iso_date(epoch_ms: i64) -> String {
    let Some(tm) = local_tm(epoch_ms) else {
        return epoch_ms.to_string();
    };
    format!(
        "{}-{:02}-{:02} {:02}:{:02}:{:02}.{:03} {}",
        tm.year,
        tm.month0 + 1,
        tm.day,
        tm.hour,
        tm.minute,
        tm.second,
        epoch_ms.rem_euclid(1000),
        tm.zone
    )
}

struct LocalTm {
    year: i32,
    month0: usize,
    day: i32,
    hour: i32,
    minute: i32,
    second: i32,
    weekday: usize,
    zone: String,
}

fn local_tm(epoch_ms: i64) -> Option<LocalTm> {
    // time_t is 32 bits on some targets, where the conversion can fail.
    #[allow(clippy::useless_conversion)]
    let secs: libc::time_t = epoch_ms.div_euclid(1000).try_into().ok()?;
    // SAFETY: `tm` is plain data that localtime_r fully initialises on success; tzset reads
    // the TZ environment once, as localtime_r requires before its first use.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe {
        tzset();
        !libc::localtime_r(&secs, &mut tm).is_null()
    };
    if !ok {
        return None;
    }
    let zone = if tm.tm_zone.is_null() {
        "UTC".to_string()
    } else {
        // SAFETY: on success tm_zone points at a NUL-terminated static zone abbreviation.
        unsafe { CStr::from_ptr(tm.tm_zone) }
            .to_string_lossy()
            .into_owned()
    };
    Some(LocalTm {
        year: tm.tm_year + 1900,
        month0: tm.tm_mon.clamp(0, 11) as usize,
        day: tm.tm_mday,
        hour: tm.tm_hour,
        minute: tm.tm_min,
        second: tm.tm_sec,
        weekday: tm.tm_wday.clamp(0, 6) as usize,
        zone,
    })
}

extern "C" {
    fn tzset();
}

/// zkCli's eleven Stat lines.
pub fn stat_text(stat: &Stat) -> String {
    format!(
        "cZxid = 0x{:x}\nctime = {}\nmZxid = 0x{:x}\nmtime = {}\npZxid = 0x{:x}\n\
         cversion = {}\ndataVersion = {}\naclVersion = {}\nephemeralOwner = 0x{:x}\n\
         dataLength = {}\nnumChildren = {}\n",
        stat.czxid,
        java_date(stat.ctime),
        stat.mzxid,
        java_date(stat.mtime),
        stat.pzxid,
        stat.cversion,
        stat.version,
        stat.aversion,
        stat.ephemeral_owner,
        stat.data_length,
        stat.num_children
    )
}

/// The Stat lines with readable times (and their age), sizes and owner.
pub fn stat_human(stat: &Stat, now_ms: i64) -> String {
    let owner = if stat.ephemeral_owner == 0 {
        "0x0 (not ephemeral)".to_string()
    } else if stat.ephemeral_owner as u64 >> 56 == 0xff {
        // TTL nodes carry their TTL in the owner field, tagged by a 0xff top byte.
        format!(
            "0x{:x} (ttl {})",
            stat.ephemeral_owner,
            human_duration(stat.ephemeral_owner & 0x00ff_ffff_ffff_ffff)
        )
    } else {
        format!("0x{:x} (session)", stat.ephemeral_owner)
    };
    format!(
        "cZxid = 0x{:x}\nctime = {} ({} ago)\nmZxid = 0x{:x}\nmtime = {} ({} ago)\n\
         pZxid = 0x{:x}\ncversion = {}\ndataVersion = {}\naclVersion = {}\n\
         ephemeralOwner = {}\ndataLength = {}\nnumChildren = {}\n",
        stat.czxid,
        iso_date(stat.ctime),
        human_duration(now_ms - stat.ctime),
        stat.mzxid,
        iso_date(stat.mtime),
        human_duration(now_ms - stat.mtime),
        stat.pzxid,
        stat.cversion,
        stat.version,
        stat.aversion,
        owner,
        human_size(stat.data_length.max(0) as u64),
        stat.num_children
    )
}

/// `512 B`, `1.5 KiB`, `3.0 MiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `42s`, `5m 3s`, `2h 10m`, `3d 4h`.
pub fn human_duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

pub fn stat_json(stat: &Stat) -> Value {
    json!({
        "czxid": stat.czxid,
        "mzxid": stat.mzxid,
        "ctime": stat.ctime,
        "mtime": stat.mtime,
        "version": stat.version,
        "cversion": stat.cversion,
        "aversion": stat.aversion,
        "ephemeralOwner": stat.ephemeral_owner,
        "dataLength": stat.data_length,
        "numChildren": stat.num_children,
        "pzxid": stat.pzxid,
    })
}

/// `cdrwa`-style permission letters, in zkCli's order.
pub fn perm_string(p: i32) -> String {
    [
        (perms::CREATE, 'c'),
        (perms::DELETE, 'd'),
        (perms::READ, 'r'),
        (perms::WRITE, 'w'),
        (perms::ADMIN, 'a'),
    ]
    .iter()
    .filter(|(bit, _)| p & bit != 0)
    .map(|(_, c)| *c)
    .collect()
}

/// One ACL entry as zkCli prints it: the Id record's CSV text, then the permissions.
pub fn acl_text(acl: &Acl) -> String {
    format!(
        "'{},'{}\n: {}\n",
        acl.id.scheme,
        acl.id.id,
        perm_string(acl.perms)
    )
}

pub fn acl_json(acls: &[Acl]) -> Value {
    Value::Array(
        acls.iter()
            .map(|a| json!({"scheme": a.id.scheme, "id": a.id.id, "perms": perm_string(a.perms)}))
            .collect(),
    )
}

/// A watch event as the CLI shows it: node events and session transitions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShownEvent {
    /// Java's KeeperState name.
    pub state: &'static str,
    /// Java's EventType name.
    pub kind: String,
    /// `None` for session events (zkCli prints `null`).
    pub path: Option<String>,
}

impl ShownEvent {
    pub fn node(ev: &NodeEvent) -> Self {
        ShownEvent {
            state: "SyncConnected",
            kind: format!("{:?}", ev.event_type),
            path: Some(ev.path.clone()),
        }
    }

    pub fn removed(kind: EventType, path: &str) -> Self {
        ShownEvent {
            state: "SyncConnected",
            kind: format!("{kind:?}"),
            path: Some(path.to_string()),
        }
    }

    /// The event zkCli's default watcher sees for a session transition, if any.
    pub fn session(state: SessionState) -> Option<Self> {
        let name = match state {
            SessionState::Connecting => return None,
            SessionState::Connected => "SyncConnected",
            SessionState::ConnectedReadOnly => "ConnectedReadOnly",
            SessionState::Disconnected => "Disconnected",
            SessionState::Expired => "Expired",
            SessionState::AuthFailed => "AuthFailed",
            SessionState::Closed => "Closed",
        };
        Some(ShownEvent {
            state: name,
            kind: "None".into(),
            path: None,
        })
    }

    /// `WatchedEvent state:SyncConnected type:NodeDataChanged path:/p`
    pub fn line(&self) -> String {
        format!(
            "WatchedEvent state:{} type:{} path:{}",
            self.state,
            self.kind,
            self.path.as_deref().unwrap_or("null")
        )
    }

    pub fn json(&self) -> Value {
        json!({"state": self.state, "type": self.kind, "path": self.path})
    }
}

/// The prompt's name for a session state (Java's `ZooKeeper.States`).
pub fn state_name(state: SessionState) -> &'static str {
    match state {
        // While reconnecting the Java client is CONNECTING again.
        SessionState::Connecting | SessionState::Disconnected => "CONNECTING",
        SessionState::Connected => "CONNECTED",
        SessionState::ConnectedReadOnly => "CONNECTEDREADONLY",
        SessionState::AuthFailed => "AUTH_FAILED",
        SessionState::Expired | SessionState::Closed => "CLOSED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_date_shape() {
        std::env::set_var("TZ", "UTC");
        assert_eq!(java_date(1_558_944_564_000), "Mon May 27 08:09:24 UTC 2019");
        assert_eq!(iso_date(1_558_944_564_123), "2019-05-27 08:09:24.123 UTC");
    }

    #[test]
    fn perms_and_sizes() {
        assert_eq!(perm_string(perms::ALL), "cdrwa");
        assert_eq!(perm_string(perms::READ | perms::ADMIN), "ra");
        assert_eq!(human_size(5), "5 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_duration(3_725_000), "1h 2m");
    }
}
