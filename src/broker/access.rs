//! Access rights (RSM §3.4): use, modify and control on the computer, each library and each media pool, mapped
//! to Unix users and groups. Identity is the peer's uid and primary gid (SO_PEERCRED at connect time).
//!
//! Who has what, in order:
//! - administrators (the configuration's `administrators` uids and `[access] admin_groups` gids) have every
//!   right everywhere;
//! - the computer: every local user may use it (open sessions, enumerate, watch);
//! - a library: every local user has `[access] library` (default use and control: mount, dismount, inventory);
//!   modify (enable and disable drives and the library) is for administrators and grants;
//! - a system pool (Free, Import, Unrecognized): every local user may use it (draw scratch media);
//! - an application pool: the user who created it (or the pool above it) has every right;
//! - plus every `[[access.grant]]` whose scope covers the object (a pool grant covers the pools below it).

use bitflags::bitflags;

use super::session::Peer;
use crate::model::{PoolKind, PoolRecord};

bitflags! {
    /// RSM's rights.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct Rights: u8 {
        /// Use: mount, dismount, read objects.
        const USE = 1;
        /// Modify: change and delete objects, enable and disable.
        const MODIFY = 2;
        /// Control: allocate, deallocate, move between pools, inventory.
        const CONTROL = 4;
    }
}

impl Rights {
    /// Parses `use`, `modify`, `control` (or `all`).
    pub fn parse(name: &str) -> Option<Rights> {
        match name.to_ascii_lowercase().as_str() {
            "use" => Some(Rights::USE),
            "modify" => Some(Rights::MODIFY),
            "control" => Some(Rights::CONTROL),
            "all" => Some(Rights::all()),
            _ => None,
        }
    }

    /// The names, for messages.
    pub fn describe(self) -> String {
        let mut v = Vec::new();
        for (r, n) in [(Rights::USE, "use"), (Rights::MODIFY, "modify"), (Rights::CONTROL, "control")] {
            if self.contains(r) {
                v.push(n);
            }
        }
        v.join("+")
    }
}

/// What a grant covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The computer (sessions, operator requests, the request queue).
    Computer,
    /// A library by name (`*`: every library).
    Library(String),
    /// A pool by path, and the pools below it.
    Pool(String),
}

/// One `[[access.grant]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// What it covers.
    pub scope: Scope,
    /// Users it applies to.
    pub uids: Vec<u32>,
    /// Groups (primary gid of the process) it applies to.
    pub gids: Vec<u32>,
    /// Every local user.
    pub everyone: bool,
    /// The rights given.
    pub rights: Rights,
}

/// The access configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRules {
    /// Groups whose members administer rsmd.
    pub admin_groups: Vec<u32>,
    /// What every local user has on a library.
    pub library: Rights,
    /// Grants.
    pub grants: Vec<Grant>,
}

impl Default for AccessRules {
    fn default() -> Self {
        AccessRules { admin_groups: Vec::new(), library: Rights::USE | Rights::CONTROL, grants: Vec::new() }
    }
}

/// An object rights are checked on.
#[derive(Debug, Clone, Copy)]
pub enum Object<'a> {
    /// The computer.
    Computer,
    /// A library, by name.
    Library(&'a str),
    /// A pool, with the chain of its records from itself up to the top.
    Pool(&'a [&'a PoolRecord]),
}

fn covers_path(grant: &str, path: &str) -> bool {
    let g = grant.trim_start_matches('\\');
    path.len() >= g.len()
        && path[..g.len()].eq_ignore_ascii_case(g)
        && (path.len() == g.len() || path.as_bytes()[g.len()] == b'\\')
}

impl AccessRules {
    /// Whether `peer` administers rsmd.
    pub fn is_admin(&self, administrators: &[u32], peer: Peer) -> bool {
        administrators.contains(&peer.uid) || self.admin_groups.contains(&peer.gid)
    }

    /// The rights `peer` has on `object`.
    pub fn rights(&self, administrators: &[u32], peer: Peer, object: Object<'_>) -> Rights {
        if self.is_admin(administrators, peer) {
            return Rights::all();
        }
        let mut r = match object {
            Object::Computer => Rights::USE,
            Object::Library(_) => self.library,
            Object::Pool(chain) => match chain.first() {
                Some(p) if p.kind != PoolKind::Application => Rights::USE,
                _ if chain.iter().any(|p| p.owner.as_ref().is_some_and(|o| o.uid == peer.uid)) => Rights::all(),
                _ => Rights::empty(),
            },
        };
        for g in &self.grants {
            let applies = g.everyone || g.uids.contains(&peer.uid) || g.gids.contains(&peer.gid);
            let covers = match (&g.scope, object) {
                (Scope::Computer, Object::Computer) => true,
                (Scope::Library(n), Object::Library(l)) => n == "*" || n.eq_ignore_ascii_case(l),
                (Scope::Pool(path), Object::Pool(chain)) => chain.first().is_some_and(|p| covers_path(path, &p.name)),
                _ => false,
            };
            if applies && covers {
                r |= g.rights;
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Guid, Owner};

    fn pool(name: &str, kind: PoolKind, owner: Option<u32>) -> PoolRecord {
        PoolRecord {
            id: Guid::derive("pool", name),
            name: name.into(),
            kind,
            media_type: None,
            parent: None,
            draw_from_free: false,
            return_to_free: false,
            max_allocations: None,
            owner: owner.map(|uid| Owner { uid, application: None }),
            description: String::new(),
            version: 1,
            created: 0,
            modified: 0,
        }
    }

    const ALICE: Peer = Peer { pid: 1, uid: 1000, gid: 1000, start_time: 1 };
    const BOB: Peer = Peer { pid: 2, uid: 1001, gid: 34, start_time: 1 };
    const ROOT: Peer = Peer { pid: 3, uid: 0, gid: 0, start_time: 1 };

    #[test]
    fn defaults_owner_grants_and_admins() {
        let mut rules = AccessRules::default();
        let admins = [0];
        let top = pool("Bacula", PoolKind::Application, Some(1000));
        let full = pool("Bacula\\Full", PoolKind::Application, Some(1000));
        let free = pool("Free\\LTO-6", PoolKind::Free, None);
        let chain = [&full, &top];
        assert_eq!(rules.rights(&admins, ALICE, Object::Pool(&chain)), Rights::all(), "creator of the pool above");
        assert_eq!(rules.rights(&admins, BOB, Object::Pool(&chain)), Rights::empty());
        assert_eq!(rules.rights(&admins, ROOT, Object::Pool(&chain)), Rights::all());
        assert_eq!(rules.rights(&admins, BOB, Object::Pool(&[&free])), Rights::USE);
        assert_eq!(rules.rights(&admins, BOB, Object::Library("lib0")), Rights::USE | Rights::CONTROL);
        assert_eq!(rules.rights(&admins, BOB, Object::Computer), Rights::USE);
        // A group grant on the top pool covers the pools below; a sibling path does not match.
        rules.grants.push(Grant {
            scope: Scope::Pool("bacula".into()),
            uids: vec![],
            gids: vec![34],
            everyone: false,
            rights: Rights::USE,
        });
        assert_eq!(rules.rights(&admins, BOB, Object::Pool(&chain)), Rights::USE);
        let other = pool("BaculaX", PoolKind::Application, Some(1000));
        assert_eq!(rules.rights(&admins, BOB, Object::Pool(&[&other])), Rights::empty());
        // Library defaults can be narrowed; admin groups have everything.
        rules.library = Rights::USE;
        assert_eq!(rules.rights(&admins, BOB, Object::Library("lib0")), Rights::USE);
        rules.admin_groups.push(34);
        assert_eq!(rules.rights(&admins, BOB, Object::Library("lib0")), Rights::all());
        assert_eq!(Rights::parse("Control"), Some(Rights::CONTROL));
        assert_eq!((Rights::USE | Rights::CONTROL).describe(), "use+control");
    }
}
