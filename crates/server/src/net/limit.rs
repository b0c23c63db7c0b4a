//! `maxClientCnxns`: how many connections one client IP may hold open at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Counts open connections per IP. Shared by the accept loop (which acquires) and the
/// connection tasks (whose permits release on drop); the lock is held for a map update only.
#[derive(Debug, Clone)]
pub struct ConnLimiter {
    max_per_ip: u32,
    counts: Arc<Mutex<HashMap<IpAddr, u32>>>,
}

/// One counted connection; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnPermit {
    ip: IpAddr,
    counts: Arc<Mutex<HashMap<IpAddr, u32>>>,
}

impl ConnLimiter {
    /// `max_per_ip == 0` means unlimited (as in ZooKeeper).
    pub fn new(max_per_ip: u32) -> ConnLimiter {
        ConnLimiter {
            max_per_ip,
            counts: Arc::default(),
        }
    }

    pub fn try_acquire(&self, ip: IpAddr) -> Option<ConnPermit> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if self.max_per_ip != 0 && *n >= self.max_per_ip {
            return None;
        }
        *n += 1;
        Some(ConnPermit {
            ip,
            counts: self.counts.clone(),
        })
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_is_per_ip_and_released_on_drop() {
        let l = ConnLimiter::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = l.try_acquire(a).unwrap();
        let _p2 = l.try_acquire(a).unwrap();
        assert!(l.try_acquire(a).is_none());
        assert!(l.try_acquire(b).is_some());
        drop(p1);
        assert!(l.try_acquire(a).is_some());
    }

    #[test]
    fn zero_means_unlimited() {
        let l = ConnLimiter::new(0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let permits: Vec<_> = (0..1000).map(|_| l.try_acquire(a).unwrap()).collect();
        assert_eq!(permits.len(), 1000);
    }
}
