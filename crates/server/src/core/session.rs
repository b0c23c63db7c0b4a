//! Sessions: ids, passwords, negotiated timeouts and expiry.
//!
//! Expiry works like ZooKeeper's bucketed expiry queue: a session heard from at `now` expires
//! at `now + timeout` rounded up to the next tick, so expiry work is batched per tick. The
//! table itself is part of the replicated state (created/closed by txns); the "last heard"
//! times are local bookkeeping of the server the client talks to.

use std::collections::{BTreeMap, HashMap};

use corral_proto::SessionId;
use sha1::{Digest, Sha1};

use super::ConnId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: SessionId,
    pub timeout_ms: i32,
    /// When the session expires unless heard from, on the monotonic clock the core is given.
    pub expires_at_ms: i64,
    /// The connection currently bound to the session.
    pub conn: Option<ConnId>,
    /// A closeSession txn is under way; requests are refused.
    pub closing: bool,
    /// On an ensemble's leader: the member the session's client is connected to, the only
    /// one whose writes for it are accepted (a write from another member is a stale request
    /// of a connection the client left: `SessionMoved`). `None` until a member claims it; a
    /// new leader starts with none, like ZooKeeper's.
    pub owner: Option<u64>,
}

#[derive(Debug, Default)]
pub struct Sessions {
    sessions: HashMap<SessionId, Session>,
    /// expiry time → sessions, for batch expiry.
    by_expiry: BTreeMap<i64, Vec<SessionId>>,
    tick_ms: i64,
    next_id: SessionId,
    secret: [u8; 16],
}

impl Sessions {
    /// `seed_ms` (wall time) makes ids unique across restarts, as ZooKeeper's time-based ids do.
    /// Every other time given to `Sessions` is monotonic.
    pub fn new(tick_ms: i32, server_id: u8, seed_ms: i64, secret: [u8; 16]) -> Sessions {
        let next_id = (((seed_ms as u64) << 24) >> 8) as i64 | ((server_id as i64) << 56);
        Sessions {
            tick_ms: tick_ms.max(1) as i64,
            next_id,
            secret,
            ..Default::default()
        }
    }

    pub fn allocate_id(&mut self) -> SessionId {
        loop {
            self.next_id += 1;
            if !self.sessions.contains_key(&self.next_id) && self.next_id != 0 {
                return self.next_id;
            }
        }
    }

    pub fn set_secret(&mut self, secret: [u8; 16]) {
        self.secret = secret;
    }

    /// The password a session id gets; derived, so it need not be stored.
    pub fn password(&self, id: SessionId) -> [u8; 16] {
        let mut h = Sha1::new();
        h.update(self.secret);
        h.update(id.to_be_bytes());
        let d = h.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&d[..16]);
        out
    }

    fn expiry_for(&self, now_ms: i64, timeout_ms: i32) -> i64 {
        let t = now_ms + timeout_ms as i64;
        (t / self.tick_ms + 1) * self.tick_ms
    }

    /// Adds a session (applying a createSession txn, or a replay of one).
    pub fn add(&mut self, id: SessionId, timeout_ms: i32, now_ms: i64) {
        let expires = self.expiry_for(now_ms, timeout_ms);
        if let Some(old) = self.sessions.get(&id) {
            self.unindex(id, old.expires_at_ms);
        }
        self.sessions.insert(
            id,
            Session {
                id,
                timeout_ms,
                expires_at_ms: expires,
                conn: None,
                closing: false,
                owner: None,
            },
        );
        self.by_expiry.entry(expires).or_default().push(id);
    }

    pub fn remove(&mut self, id: SessionId) -> Option<Session> {
        let s = self.sessions.remove(&id)?;
        self.unindex(id, s.expires_at_ms);
        Some(s)
    }

    fn unindex(&mut self, id: SessionId, at: i64) {
        if let Some(v) = self.by_expiry.get_mut(&at) {
            v.retain(|s| *s != id);
            if v.is_empty() {
                self.by_expiry.remove(&at);
            }
        }
    }

    /// The client was heard from: push its expiry forward.
    pub fn touch(&mut self, id: SessionId, now_ms: i64) -> bool {
        let Some(s) = self.sessions.get(&id) else {
            return false;
        };
        if s.closing {
            return false;
        }
        let (old, timeout) = (s.expires_at_ms, s.timeout_ms);
        let new = self.expiry_for(now_ms, timeout);
        if new != old {
            self.unindex(id, old);
            self.by_expiry.entry(new).or_default().push(id);
            self.sessions.get_mut(&id).expect("present").expires_at_ms = new;
        }
        true
    }

    /// Sessions whose expiry time has passed and that are not already closing.
    pub fn expired(&self, now_ms: i64) -> Vec<SessionId> {
        let mut out: Vec<SessionId> = self
            .by_expiry
            .range(..=now_ms)
            .flat_map(|(_, ids)| ids.iter().copied())
            .filter(|id| self.sessions.get(id).is_some_and(|s| !s.closing))
            .collect();
        out.sort_unstable();
        out
    }

    pub fn get(&self, id: SessionId) -> Option<&Session> {
        self.sessions.get(&id)
    }

    pub fn get_mut(&mut self, id: SessionId) -> Option<&mut Session> {
        self.sessions.get_mut(&id)
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values()
    }

    /// After recovery every session gets its full timeout again from start-up (as ZooKeeper).
    pub fn restart_all_clocks(&mut self, now_ms: i64) {
        let ids: Vec<_> = self.sessions.keys().copied().collect();
        for id in ids {
            let timeout = self.sessions[&id].timeout_ms;
            self.add(id, timeout, now_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_after_their_timeout_rounded_to_ticks() {
        let mut s = Sessions::new(100, 1, 1_000_000, [0; 16]);
        let id = s.allocate_id();
        s.add(id, 1000, 0);
        assert!(s.expired(1000).is_empty());
        assert_eq!(s.expired(1100), vec![id]);
        s.touch(id, 500);
        assert!(s.expired(1100).is_empty());
        assert_eq!(s.expired(1600), vec![id]);
    }

    #[test]
    fn ids_carry_the_server_id_and_passwords_are_stable() {
        let mut s = Sessions::new(100, 3, 1_700_000_000_000, [9; 16]);
        let a = s.allocate_id();
        let b = s.allocate_id();
        assert_ne!(a, b);
        assert_eq!(a >> 56, 3);
        assert_eq!(s.password(a), s.password(a));
        assert_ne!(s.password(a), s.password(b));
    }
}
