//! Maps parsed methods to the daemon's domain calls, and domain errors to the wire's closed vocabulary. The only
//! place where internal errors become `proto` errors.

use serde_json::{Map, Value};

use super::objects::View;
use super::session::{HandleError, Peer};
use super::{pools, Broker};
use crate::changer::{JobError, MoveError};
use crate::model::Guid;
use crate::proto::types::{DescriptionReply, EnumerateReply, ObjectReply, ObjectType, OpenSessionReply, RequestReply};
use crate::proto::{interface, Method, NtmsError, VarlinkError, WireError, PROTOCOL_VERSION};
use crate::scsi::action::Failure;

/// What to do with a call.
#[derive(Debug)]
pub enum Answer {
    /// Reply now (after the store batch `durable` is on disk; 0 = at once).
    Reply(Result<Map<String, Value>, WireError>, u64),
    /// Reply now with this framed reply: lookups, written straight from their objects (through a JSON tree they
    /// cost twice the instructions).
    Encoded(Vec<u8>),
    /// An enumeration without `limit` too large for one turn: the loop builds it a page per serving of the
    /// connection ([`Broker::continue_enumeration`]), so that the other clients are served in between (50,000
    /// slots in one turn held everyone for 115–177 ms).
    Building(Enumeration),
    /// The reply comes when the job with this request key finishes.
    Later {
        /// The request.
        key: crate::model::RequestId,
    },
    /// A `more` stream of notifications for a session.
    Stream {
        /// The session.
        session: String,
        /// Only this object type.
        filter: Option<ObjectType>,
    },
}

/// Objects an unpaged enumeration adds per serving ([`Answer::Building`]).
pub const ENUMERATION_PAGE: usize = 1000;

/// An unpaged `EnumerateObjects` being built ([`Answer::Building`]).
#[derive(Debug)]
pub struct Enumeration {
    peer: Peer,
    object_type: ObjectType,
    container: Option<Guid>,
    /// The last object of the previous page.
    after: Option<String>,
    /// The framed reply so far.
    bytes: Vec<u8>,
    /// No object written yet.
    first: bool,
}

impl Enumeration {
    /// The framed reply, once [`Broker::continue_enumeration`] said it is complete.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Bytes built and not yet taken (they count against the memory budget).
    pub fn built(&self) -> usize {
        self.bytes.len()
    }

    /// Moves the bytes built so far to the end of `out` (the reply streams out while the rest is built); into an
    /// empty `out` by swapping buffers, not copying.
    pub fn take_built(&mut self, out: &mut Vec<u8>) {
        if out.is_empty() {
            std::mem::swap(out, &mut self.bytes);
        } else {
            out.extend_from_slice(&self.bytes);
            self.bytes.clear();
        }
    }
}

/// A lookup's reply, framed (see [`Answer::Encoded`]).
fn encoded<T: serde::Serialize>(v: &T) -> Answer {
    match crate::proto::envelope::encode_parameters(v) {
        Some(bytes) => Answer::Encoded(bytes),
        None => {
            Answer::Reply(Err(NtmsError::Internal { message: "reply did not serialize to an object".into() }.into()), 0)
        }
    }
}

pub(super) fn reply<T: serde::Serialize>(v: &T) -> Result<Map<String, Value>, WireError> {
    match serde_json::to_value(v) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(NtmsError::Internal { message: "reply did not serialize to an object".into() }.into()),
    }
}

fn ntms(e: NtmsError) -> Result<Map<String, Value>, WireError> {
    Err(WireError::Ntms(e))
}

/// How a `server` argument of OpenSession relates to this host.
#[derive(Debug, PartialEq, Eq)]
pub enum ServerName {
    /// This daemon.
    Local,
    /// A well-formed name of another computer.
    Remote,
    /// Not a valid computer name.
    Invalid,
}

/// Classifies an OpenSession `server` name against this host's name: null, empty, `localhost`, or this host's
/// name in any case, short or fully qualified, is local; a valid DNS or NetBIOS name is remote; anything else is
/// invalid.
pub fn classify_server_name(name: Option<&str>, host: &str) -> ServerName {
    let Some(name) = name else { return ServerName::Local };
    let name = name.strip_prefix("\\\\").unwrap_or(name);
    if name.is_empty() || name == "." {
        return ServerName::Local;
    }
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.len() > 253 || !trimmed.split('.').all(valid_label) {
        return ServerName::Invalid;
    }
    let short = |s: &str| s.split('.').next().unwrap_or("").to_ascii_lowercase();
    let lower = trimmed.to_ascii_lowercase();
    if lower == "localhost" || lower == host.to_ascii_lowercase() || (short(trimmed) == short(host) && !host.is_empty())
    {
        ServerName::Local
    } else {
        ServerName::Remote
    }
}

/// The wire error for a failed job.
pub fn job_error(e: &JobError, mount: bool) -> NtmsError {
    let message = crate::error_chain(e);
    match e {
        JobError::Cancelled => NtmsError::Cancelled { message },
        JobError::TimedOut => NtmsError::Timeout { message },
        JobError::Offline | JobError::Move(MoveError::Offline) => NtmsError::LibraryOffline { message },
        JobError::DriveUnavailable(_) | JobError::Unmapped(_) | JobError::DriveGone => {
            NtmsError::DeviceNotAvailable { message }
        }
        JobError::Move(MoveError::Refused(Failure::CleaningCartridgeInstalled))
        | JobError::NotReady(Failure::CleaningCartridgeInstalled) => NtmsError::CleanerCartridgeInstalled { message },
        JobError::NoFreeSlot => NtmsError::LibraryFull { message },
        JobError::UnloadRefused(_) => NtmsError::DeviceNotAvailable { message },
        JobError::WriteProtected => NtmsError::WriteProtect { message },
        JobError::CleanerStuck => NtmsError::DeviceNotAvailable { message },
        JobError::NotACleaner => NtmsError::InvalidMedia { message },
        _ if mount => NtmsError::UnableToLoadMedium { message },
        _ => NtmsError::MediumNotAccessible { message },
    }
}

impl Broker {
    fn session_of(&self, handle: &str, peer: Peer) -> Result<(), WireError> {
        match self.sessions.check(handle, peer) {
            Ok(_) => Ok(()),
            Err(HandleError::Unknown) => {
                Err(NtmsError::InvalidHandle { message: format!("no session {handle:?} (closed or never opened)") }
                    .into())
            }
            Err(HandleError::Foreign) => Err(NtmsError::InvalidHandle {
                message: "the session belongs to another process; open one in this process".into(),
            }
            .into()),
        }
    }

    /// Handles one parsed call from `peer`.
    pub fn dispatch(&mut self, method: Method, peer: Peer) -> Answer {
        let now = Answer::Reply;
        // Session-bound methods check the handle first; everything but the service methods needs the inventory.
        if let Some(handle) = method.session() {
            if let Err(e) = self.session_of(handle, peer) {
                return now(Err(e), 0);
            }
        }
        let needs_inventory =
            !matches!(method, Method::GetInfo | Method::GetInterfaceDescription { .. } | Method::CloseSession { .. });
        if needs_inventory && self.inventory.is_none() {
            return now(
                ntms(NtmsError::NotReady { message: "rsmd is loading its inventory; retry shortly".into() }),
                0,
            );
        }
        match method {
            Method::GetInfo => now(reply(&interface::service_info()), 0),
            Method::GetInterfaceDescription { interface: name } => match interface::description(&name) {
                Some(d) => now(reply(&DescriptionReply { description: d.into() }), 0),
                None => now(Err(VarlinkError::InterfaceNotFound { interface: name }.into()), 0),
            },
            Method::OpenSession { server, application, options, version } => {
                if options != 0 {
                    return now(
                        ntms(NtmsError::InvalidParameter { message: format!("options must be 0, not {options}") }),
                        0,
                    );
                }
                if version.unwrap_or(1) > PROTOCOL_VERSION {
                    return now(
                        ntms(NtmsError::NoInterfaces {
                            message: format!(
                                "the client needs protocol version {}, this rsmd speaks {PROTOCOL_VERSION}",
                                version.unwrap_or(1)
                            ),
                        }),
                        0,
                    );
                }
                match classify_server_name(server.as_deref(), &self.host) {
                    ServerName::Invalid => {
                        return now(
                            ntms(NtmsError::InvalidComputerName {
                                message: format!("{:?} is not a valid computer name", server.unwrap_or_default()),
                            }),
                            0,
                        )
                    }
                    ServerName::Remote => {
                        return now(
                            ntms(NtmsError::NoNetwork {
                                message: format!(
                                    "{} is not this computer ({}); remote servers are not reachable",
                                    server.unwrap_or_default(),
                                    self.host
                                ),
                            }),
                            0,
                        )
                    }
                    ServerName::Local => {}
                }
                let s = self.sessions.open(peer, application);
                log::debug!(
                    "session opened by uid {} pid {} (application {})",
                    peer.uid,
                    peer.pid,
                    s.application.as_deref().unwrap_or("unnamed")
                );
                now(reply(&OpenSessionReply { session: s.handle.clone(), version: PROTOCOL_VERSION }), 0)
            }
            Method::Bridge { client } => {
                // Bounded: it is a label in the log and in requests, not data.
                let client: String = client.chars().filter(|c| !c.is_control()).take(200).collect();
                self.sessions.bridge(peer, client);
                now(Ok(Map::new()), 0)
            }
            Method::CloseSession { session } => {
                let _ = self.sessions.close(&session, peer);
                self.session_ended(&session);
                now(Ok(Map::new()), 0)
            }
            Method::EnumerateObjects { container, object_type, after, limit, .. } => {
                let container = match container.as_deref().map(|c| self.resolve_container(c)) {
                    None => None,
                    Some(Ok(g)) => Some(g),
                    Some(Err(e)) => return now(Err(e), 0),
                };
                let Some(limit) = limit else {
                    let mut e = Enumeration {
                        peer,
                        object_type,
                        container,
                        after,
                        bytes: b"{\"parameters\":{\"objects\":[".to_vec(),
                        first: true,
                    };
                    return if self.continue_enumeration(&mut e) {
                        Answer::Encoded(e.bytes)
                    } else {
                        Answer::Building(e)
                    };
                };
                let limit = usize::try_from(limit).unwrap_or(usize::MAX);
                let (objects, next) = self.visible_page(peer, object_type, container, after.as_deref(), limit);
                encoded(&EnumerateReply { objects, next })
            }
            Method::GetObjectInformation { object, .. } => match self.with_view(|v| v.find(&object)) {
                Some(o) if !self.may_see(peer, &o) => now(
                    ntms(NtmsError::AccessDenied {
                        message: format!("uid {} has no use right on the pool of {object:?}", peer.uid),
                    }),
                    0,
                ),
                Some(object) => encoded(&ObjectReply { object }),
                None => now(ntms(NtmsError::ObjectNotFound { message: format!("no object {object:?}") }), 0),
            },
            Method::InventoryLibrary { session, library, mode } => {
                let Ok(id) = library.parse::<Guid>() else {
                    return now(ntms(NtmsError::InvalidLibrary { message: format!("no library {library:?}") }), 0);
                };
                match self.start_inventory(id, &session, mode) {
                    Ok(request) => now(reply(&RequestReply { request }), self.batch_for_reply()),
                    Err(e) => now(ntms(e), 0),
                }
            }
            Method::WaitForNotification { session, object_type } => Answer::Stream { session, filter: object_type },
            Method::CancelLibraryRequest { session, request } => {
                match self.cancel_request(&request, &session, self.is_admin(peer)) {
                    Ok(()) => now(Ok(Map::new()), self.batch_for_reply()),
                    Err(e) => now(ntms(e), 0),
                }
            }
            Method::SetRequestPriority { session, request, priority } => {
                match self.set_request_priority(&request, priority, &session, self.is_admin(peer)) {
                    Ok(()) => now(Ok(Map::new()), self.batch_for_reply()),
                    Err(e) => now(ntms(e), 0),
                }
            }
            Method::MountMedia { session, media, drive, flags, priority, timeout_ms, pool } => {
                self.mount(&session, &media, drive.as_deref(), flags, priority, timeout_ms, pool.as_deref())
            }
            Method::DismountMedia { session, target, deferred, to } => {
                let admin = self.is_admin(peer);
                self.dismount(&session, &target, deferred, admin, to.as_deref())
            }
            Method::CreateMediaPool { session, name, media_type, action } => {
                pools::answer(self.create_pool(&session, peer, &name, media_type.as_deref(), action))
            }
            Method::DeleteMediaPool { session, pool } => pools::answer(self.delete_pool(&session, peer, &pool)),
            Method::MoveToMediaPool { session, media, pool } => {
                pools::answer(self.move_to_pool(&session, peer, &media, &pool))
            }
            Method::AllocateMedia { session, pool, media, new: _, error_if_unavailable, timeout_ms } => {
                self.allocate(&session, peer, &pool, media.as_deref(), error_if_unavailable, timeout_ms)
            }
            Method::DeallocateMedia { session, logical_media } => {
                pools::answer(self.lmid_call(&session, peer, &logical_media, false))
            }
            Method::SetMediaComplete { session, logical_media } => {
                pools::answer(self.lmid_call(&session, peer, &logical_media, true))
            }
            Method::SwapMedia { session, first, second } => pools::answer(self.swap(&session, peer, &first, &second)),
            Method::DecommissionMedia { session, media } => {
                pools::answer(self.media_call(&session, peer, &media, false))
            }
            Method::DeleteMedia { session, media } => pools::answer(self.media_call(&session, peer, &media, true)),
            Method::EnableObject { session, object } => pools::answer(self.set_enabled(&session, peer, &object, true)),
            Method::DisableObject { session, object } => {
                pools::answer(self.set_enabled(&session, peer, &object, false))
            }
            Method::SetObjectInformation { session, object, version, changes } => {
                pools::answer(self.set_object_information(&session, peer, &object, version, &changes))
            }
            Method::EjectMedia { session, media, error_if_full } => self.eject(&session, peer, &media, error_if_full),
            Method::CleanDrive { session, drive } => self.clean_drive(&session, peer, &drive),
            Method::MoveMedia { session, media, destination } => self.move_media(&session, peer, &media, &destination),
            Method::AccessLibraryDoor { session, library, inventory } => {
                self.access_door(&session, peer, &library, inventory)
            }
            Method::SubmitOperatorRequest { session, kind, text, object } => {
                answer_now(self.submit_operator(&session, kind, &text, object.as_deref()), self)
            }
            Method::WaitForOperatorRequest { session, request, timeout_ms } => {
                self.wait_operator(&session, &request, timeout_ms)
            }
            Method::SatisfyOperatorRequest { request, .. } => {
                answer_now(self.answer_operator(peer, &request, true, None), self)
            }
            Method::RefuseOperatorRequest { request, reason, .. } => {
                answer_now(self.answer_operator(peer, &request, false, reason.as_deref()), self)
            }
            Method::CancelOperatorRequest { session, request } => {
                answer_now(self.cancel_operator(&session, peer, &request), self)
            }
            Method::InjectMedia { session, library } => self.inject(&session, peer, &library),
        }
    }

    /// Whether `peer` may see an object: cartridges and pools need use on the pool; everything else is public.
    fn may_see(&self, peer: Peer, o: &crate::proto::types::ObjectInfo) -> bool {
        self.is_admin(peer)
            || pool_of_object(o).is_none_or(|p| self.pool_rights(peer, p).contains(super::access::Rights::USE))
    }

    fn resolve_container(&self, c: &str) -> Result<Guid, WireError> {
        c.parse::<Guid>()
            .map_err(|_| NtmsError::ObjectNotFound { message: format!("no container {c:?}") }.into())
            .and_then(|g| {
                let known = self.with_view(|v| v.find(c).is_some());
                if known {
                    Ok(g)
                } else {
                    Err(NtmsError::ObjectNotFound { message: format!("no container {c:?}") }.into())
                }
            })
    }

    /// A page of `limit` objects after `after`, those `peer` may not see left out, and the id the next page starts
    /// after (None: no more). The page ends where the daemon's order ended it, even when the rights drop objects
    /// from it.
    fn visible_page(
        &self,
        peer: Peer,
        object_type: ObjectType,
        container: Option<Guid>,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<crate::proto::types::ObjectInfo>, Option<String>) {
        let (mut objects, more) = self.with_view(|v| v.enumerate_page(object_type, container, after, limit));
        let next = more.then(|| objects.last().map(|o| o.id.clone())).flatten();
        if !self.is_admin(peer) && matches!(object_type, ObjectType::PhysicalMedia | ObjectType::MediaPool) {
            let usable = self.usable_pools(peer);
            objects.retain(|o| pool_of_object(o).is_none_or(|p| usable.contains(&p)));
        }
        (objects, next)
    }

    /// Adds the next page of an unpaged enumeration ([`Answer::Building`]); true once it is complete (then
    /// [`Enumeration::into_bytes`] is the framed reply).
    pub fn continue_enumeration(&self, e: &mut Enumeration) -> bool {
        let (objects, next) =
            self.visible_page(e.peer, e.object_type, e.container, e.after.as_deref(), ENUMERATION_PAGE);
        for o in &objects {
            if !e.first {
                e.bytes.push(b',');
            }
            e.first = false;
            // An object always serialises (strings, numbers, options); written to memory, nothing can fail.
            let _ = serde_json::to_writer(&mut e.bytes, o);
        }
        if next.is_some() {
            e.after = next;
            return false;
        }
        e.bytes.extend_from_slice(b"]}}\0");
        true
    }

    /// Runs `f` on a view of the objects.
    pub fn with_view<T>(&self, f: impl FnOnce(&View<'_>) -> T) -> T {
        let empty = crate::media::Inventory::default();
        let libraries: Vec<_> = self.libs.iter().filter_map(|l| l.view()).collect();
        let requests = &self.requests;
        let view = View {
            inventory: self.inventory.as_ref().unwrap_or(&empty),
            host: &self.host,
            libraries: &libraries,
            requests,
            operators: &self.operators,
            absent: &self.absent,
            started: self.options.epoch_ms,
            busy_media: std::cell::OnceCell::new(),
        };
        f(&view)
    }
}

/// The answer to a call that changed something and replies at once (after its batch is durable).
fn answer_now(r: Result<Map<String, Value>, NtmsError>, b: &Broker) -> Answer {
    match r {
        Ok(m) => Answer::Reply(Ok(m), b.batch_for_reply()),
        Err(e) => Answer::Reply(Err(WireError::Ntms(e)), 0),
    }
}

/// The pool an object's visibility depends on: a cartridge's pool, a pool itself.
fn pool_of_object(o: &crate::proto::types::ObjectInfo) -> Option<Guid> {
    use crate::proto::types::ObjectDetails;
    match &o.details {
        ObjectDetails::PhysicalMedia(m) => m.pool.as_deref()?.parse().ok(),
        ObjectDetails::MediaPool(_) => o.id.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        let host = "backup01.example.com";
        assert_eq!(classify_server_name(None, host), ServerName::Local);
        assert_eq!(classify_server_name(Some(""), host), ServerName::Local);
        assert_eq!(classify_server_name(Some("BACKUP01"), host), ServerName::Local);
        assert_eq!(classify_server_name(Some("backup01.EXAMPLE.com"), host), ServerName::Local);
        assert_eq!(classify_server_name(Some("\\\\backup01"), host), ServerName::Local);
        assert_eq!(classify_server_name(Some("localhost"), host), ServerName::Local);
        assert_eq!(classify_server_name(Some("other-host"), host), ServerName::Remote);
        assert_eq!(classify_server_name(Some("tape.example.org"), host), ServerName::Remote);
        for bad in ["bad name", "a..b", "-lead", "trail-", "under_score", "x/y", &"a".repeat(64)] {
            assert_eq!(classify_server_name(Some(bad), host), ServerName::Invalid, "{bad}");
        }
    }
}
