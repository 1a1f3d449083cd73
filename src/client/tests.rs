//! Client tests against an in-test fake server that speaks the framing.

use super::*;
use crate::proto::envelope::Reply;
use crate::proto::types::samples;
use crate::proto::{Call as WireCall, VarlinkError};
use serde_json::json;
use std::os::unix::net::UnixListener;
use std::sync::mpsc;
use std::sync::{Arc, Mutex as StdMutex};
use std::thread;

/// What the fake answers to one call: a list of raw messages (each without NUL), or closing the connection.
enum Answer {
    Messages(Vec<Value>),
    Raw(Vec<u8>),
    Hangup,
}

type Handler = dyn Fn(&WireCall) -> Answer + Send + Sync;

/// A fake rsmd: accepts connections on a temp socket, one thread per connection, and records every call.
struct FakeServer {
    _dir: tempfile::TempDir,
    path: PathBuf,
    calls: Arc<StdMutex<Vec<WireCall>>>,
}

impl FakeServer {
    fn start(handler: impl Fn(&WireCall) -> Answer + Send + Sync + 'static) -> FakeServer {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rsmd.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let calls = Arc::new(StdMutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let recorded = Arc::clone(&calls);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let handler = Arc::clone(&handler);
                let recorded = Arc::clone(&recorded);
                thread::spawn(move || serve(stream, &*handler, &recorded));
            }
        });
        FakeServer { _dir: dir, path, calls }
    }

    fn methods(&self) -> Vec<String> {
        self.calls.lock().unwrap().iter().map(|c| c.method.clone()).collect()
    }
}

fn serve(mut stream: UnixStream, handler: &Handler, recorded: &StdMutex<Vec<WireCall>>) {
    let mut decoder = FrameDecoder::new();
    let mut buf = [0u8; 4096];
    loop {
        while let Some(msg) = decoder.next_message() {
            let call = WireCall::parse(&msg.unwrap()).unwrap();
            recorded.lock().unwrap().push(call.clone());
            match handler(&call) {
                Answer::Messages(msgs) => {
                    for m in msgs {
                        if stream.write_all(&crate::proto::encode(&m)).is_err() {
                            return;
                        }
                    }
                }
                Answer::Raw(bytes) => {
                    if stream.write_all(&bytes).is_err() {
                        return;
                    }
                }
                Answer::Hangup => return,
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => decoder.extend(&buf[..n]),
        }
    }
}

fn reply(params: Value) -> Answer {
    Answer::Messages(vec![json!({ "parameters": params })])
}

fn error(e: NtmsError) -> Answer {
    Answer::Messages(vec![e.to_reply()])
}

/// The usual answers: sessions open, everything else per `rest`.
fn standard(call: &WireCall) -> Answer {
    match Method::parse(call) {
        Ok(Method::OpenSession { .. }) => reply(json!({"session": "S1", "version": 1})),
        Ok(Method::CloseSession { .. }) => reply(json!({})),
        Ok(Method::EnumerateObjects { object_type, .. }) => {
            let objects: Vec<ObjectInfo> =
                samples::all().into_iter().filter(|o| o.object_type == object_type).collect();
            reply(json!({ "objects": objects }))
        }
        Ok(Method::GetObjectInformation { object, .. }) => match samples::all().into_iter().find(|o| o.id == object) {
            Some(o) => reply(json!({ "object": o })),
            None => error(NtmsError::ObjectNotFound { message: format!("no object {object}") }),
        },
        Ok(Method::MountMedia { .. }) => {
            reply(json!({"request": "R1", "media": "M", "drive": "D", "device": "/dev/nst0"}))
        }
        Ok(Method::DismountMedia { .. } | Method::CancelLibraryRequest { .. }) => reply(json!({})),
        Ok(Method::InventoryLibrary { .. }) => reply(json!({"request": "R2"})),
        Ok(Method::WaitForNotification { .. }) => Answer::Messages(vec![
            json!({"parameters": {"operation": "update", "object_type": "drive", "object": "a"}, "continues": true}),
            json!({"parameters": {"operation": "delete", "object_type": "library", "object": "b"}}),
        ]),
        Ok(Method::GetInfo) => reply(serde_json::to_value(crate::proto::interface::service_info()).unwrap()),
        Ok(Method::GetInterfaceDescription { interface }) => match crate::proto::interface::description(&interface) {
            Some(d) => reply(json!({ "description": d })),
            None => Answer::Messages(vec![VarlinkError::InterfaceNotFound { interface }.to_reply()]),
        },
        Ok(_) => Answer::Messages(vec![VarlinkError::MethodNotImplemented { method: call.method.clone() }.to_reply()]),
        Err(e) => Answer::Messages(vec![e.to_reply()]),
    }
}

#[test]
fn session_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Session>();
}

#[test]
fn missing_socket_is_not_connected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nothing.sock");
    let e = Session::open_at(&path, None, None, 0).unwrap_err();
    assert_eq!(e.code(), 2250);
    assert_eq!(
        e.to_string(),
        format!("no socket at {}: rsmd is not running there: NotConnected (2250)", path.display())
    );
}

/// Issue 15: a missing path, a directory, a file that is not a socket and a socket nobody listens on all said
/// `NotConnected (2250)` and nothing else; each now says which.
#[test]
fn issue_15_unreachable_sockets_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let cases = [
        (dir.path().join("nothing.sock"), "no socket at"),
        (dir.path().to_owned(), "is a directory, not rsmd's socket"),
        (file, "is not a socket"),
        (stale, "nothing listens on"),
    ];
    let mut messages = Vec::new();
    for (path, says) in cases {
        let e = Connection::connect(&path).unwrap_err();
        assert!(matches!(e, NtmsError::NotConnected { .. }), "{e:?}");
        assert!(e.message().contains(says) && e.message().contains(&*path.to_string_lossy()), "{path:?}: {e}");
        messages.push(e.message().to_owned());
    }
    messages.dedup();
    assert_eq!(messages.len(), 4);
}

/// Issue 15: a socket that accepts but never answers made every call hang forever.
#[test]
fn issue_15_a_daemon_that_never_answers_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mute.sock");
    // Listening, accepting into the kernel's queue, never reading or answering.
    let _listener = UnixListener::bind(&path).unwrap();
    let timeouts = Timeouts { connect: Duration::from_millis(200), reply: Duration::from_millis(200) };
    let opts = SessionOptions { socket: Some(path.clone()), wait_ready: None };
    let e = Session::open_with_timeouts(&opts, timeouts, None, None, 0).unwrap_err();
    assert!(matches!(e, NtmsError::Timeout { .. }), "{e:?}");
    assert_eq!(e.message(), format!("rsmd at {} did not answer OpenSession within 200 ms", path.display()));
    let mut conn = Connection::connect_with(&path, timeouts).unwrap();
    assert_eq!(conn.call("org.varlink.service.GetInfo", Map::new()).unwrap_err().code(), 1460);
    assert!(conn.is_broken(), "a late answer would be out of step");
}

/// Calls that wait for the hardware have no reply timeout; the others do.
#[test]
fn which_calls_wait_for_the_hardware() {
    let t = Timeouts { connect: Duration::from_secs(1), reply: Duration::from_secs(2) };
    let s = || "S".to_owned();
    let mount = |nowait, timeout_ms| Method::MountMedia {
        session: s(),
        media: vec!["A".into()],
        drive: None,
        flags: MountFlags { nowait, ..MountFlags::default() },
        priority: 0,
        timeout_ms,
        pool: None,
    };
    assert_eq!(reply_wait(Some(&mount(false, None)), &t), None);
    assert_eq!(reply_wait(Some(&mount(false, Some(5000))), &t), Some(Duration::from_secs(7)));
    assert_eq!(reply_wait(Some(&mount(true, None)), &t), Some(Duration::from_secs(2)));
    let dismount = |deferred| Method::DismountMedia {
        session: s(),
        target: DismountTarget::Media("A".into()),
        deferred,
        to: None,
    };
    assert_eq!(reply_wait(Some(&dismount(false)), &t), None);
    assert_eq!(reply_wait(Some(&dismount(true)), &t), Some(Duration::from_secs(2)));
    assert_eq!(reply_wait(Some(&Method::WaitForNotification { session: s(), object_type: None }), &t), None);
    assert_eq!(reply_wait(Some(&Method::GetInfo), &t), Some(Duration::from_secs(2)));
    assert_eq!(reply_wait(None, &t), Some(Duration::from_secs(2)), "unknown methods are quick");
}

/// A listener whose queue is full and which accepts nothing: connecting waits the connect timeout, not forever.
#[test]
fn connecting_to_a_full_queue_times_out() {
    use nix::sys::socket::{bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.sock");
    let fd = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).unwrap();
    bind(fd.as_raw_fd(), &UnixAddr::new(&path).unwrap()).unwrap();
    listen(&fd, Backlog::new(0).unwrap()).unwrap();
    let timeouts = Timeouts { connect: Duration::from_millis(100), reply: Duration::from_millis(100) };
    // Fill the queue (a backlog of 0 holds one connection), then the next connect waits.
    let mut held = Vec::new();
    let e = loop {
        match Connection::connect_with(&path, timeouts) {
            Ok(c) => held.push(c),
            Err(e) => break e,
        }
        assert!(held.len() < 64, "the queue never filled");
    };
    assert!(matches!(e, NtmsError::Timeout { .. }), "{e:?}");
    assert!(e.message().contains("did not accept the connection within 100 ms"), "{e}");
}

#[test]
fn socket_search_failure_lists_what_was_tried() {
    let location = SocketLocation {
        path: PathBuf::from("/run/rsmd/rsmd.sock"),
        origin: SocketOrigin::NotFound,
        tried: vec!["/run/rsmd/rsmd.sock".into(), "/tmp/rsmd-demo-7/rsmd.sock".into()],
        skipped: vec!["ignored /x/rsmd.sock: not private".into()],
    };
    let e = explain(NtmsError::NotConnected { message: "no socket".into() }, &location);
    assert_eq!(
        e.message(),
        "rsmd is not running: no socket to use at /run/rsmd/rsmd.sock, nor at /tmp/rsmd-demo-7/rsmd.sock (start \
         rsmd or `rsmd --demo`, or give the socket with --socket or $RSMD_SOCKET); ignored /x/rsmd.sock: not private"
    );
    // A socket that was given keeps its own message.
    let given = SocketLocation { origin: SocketOrigin::Explicit, ..location };
    assert_eq!(explain(NtmsError::NotConnected { message: "no socket".into() }, &given).message(), "no socket");
}

#[test]
fn socket_path_precedence() {
    assert_eq!(socket_path(Some(Path::new("/x.sock"))), PathBuf::from("/x.sock"));
    // The only test that touches the variable (the search itself is tested in `locate`, without the environment).
    std::env::set_var(SOCKET_ENV, "/tmp/env.sock");
    assert_eq!(socket_path(None), PathBuf::from("/tmp/env.sock"));
    std::env::remove_var(SOCKET_ENV);
}

#[test]
fn open_sends_version_and_close_closes() {
    let server = FakeServer::start(standard);
    let s = Session::open_at(&server.path, None, Some("test"), 0).unwrap();
    assert_eq!(s.id(), "S1");
    s.close().unwrap();
    let calls = server.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].parameters["version"], 1);
    assert_eq!(calls[0].parameters["application"], "test");
    assert_eq!(calls[1].method, "io.rsmd.Ntms.CloseSession");
    assert_eq!(calls[1].parameters["session"], "S1");
}

#[test]
fn drop_closes_the_session_once() {
    let server = FakeServer::start(standard);
    drop(Session::open_at(&server.path, None, None, 0).unwrap());
    assert_eq!(server.methods(), ["io.rsmd.Ntms.OpenSession", "io.rsmd.Ntms.CloseSession"]);
}

#[test]
fn typed_calls_decode_replies() {
    let server = FakeServer::start(standard);
    let s = Session::open_at(&server.path, None, None, 0).unwrap();
    let drives = s.enumerate(None, ObjectType::Drive).unwrap();
    assert_eq!(drives.len(), 1);
    assert_eq!(drives[0].object_type, ObjectType::Drive);
    let one = s.get_object_information(&drives[0].id).unwrap();
    assert_eq!(one, drives[0]);
    let m = s.mount(&["ABC001L6"], Some("D"), MountFlags::default(), 0, Some(Duration::from_secs(5))).unwrap();
    assert_eq!(m.device.as_deref(), Some("/dev/nst0"));
    s.dismount(DismountTarget::Drive("D".into()), true).unwrap();
    s.cancel_request("R1").unwrap();
    assert_eq!(s.inventory("L", InventoryMode::Fast).unwrap(), "R2");
    assert_eq!(s.requests().unwrap().len(), 1);
    let calls = server.calls.lock().unwrap().clone();
    let mount = calls.iter().find(|c| c.method.ends_with("MountMedia")).unwrap();
    assert_eq!(mount.parameters["timeout_ms"], 5000);
    assert_eq!(mount.parameters["session"], "S1");
    // Everything ran on the one pooled connection.
    assert_eq!(s.idle_connections(), 1);
}

#[test]
fn error_replies_become_ntms_errors() {
    let server = FakeServer::start(standard);
    let s = Session::open_at(&server.path, None, None, 0).unwrap();
    let e = s.get_object_information("nope").unwrap_err();
    assert_eq!(e, NtmsError::ObjectNotFound { message: "no object nope".into() });
    let e = s
        .call(&Method::EjectMedia { session: "S1".into(), media: vec!["m".into()], error_if_full: false })
        .unwrap_err();
    assert_eq!(e.code(), 120);
    // An error reply leaves the connection usable.
    assert_eq!(s.idle_connections(), 1);
    assert!(s.enumerate(None, ObjectType::Library).is_ok());
}

#[test]
fn resolve_drive_by_number_serial_or_id() {
    let server = FakeServer::start(standard);
    let s = Session::open_at(&server.path, None, None, 0).unwrap();
    let drive = samples::all().into_iter().find(|o| o.object_type == ObjectType::Drive).unwrap();
    assert_eq!(s.resolve_drive("0").unwrap(), drive.id);
    assert_eq!(s.resolve_drive(&drive.id).unwrap(), drive.id);
    assert_eq!(s.resolve_drive(&drive.id.to_uppercase()).unwrap(), drive.id);
    // Issue 15: `--drive` takes a drive's serial too, in any case.
    assert_eq!(s.resolve_drive("D0").unwrap(), drive.id);
    assert_eq!(s.resolve_drive("d0").unwrap(), drive.id);
    assert_eq!(s.resolve_drive("7").unwrap_err().code(), 4312);
    assert_eq!(s.resolve_drive("some-id").unwrap_err().code(), 4312);
}

#[test]
fn a_number_or_serial_in_two_libraries_is_ambiguous() {
    let drive = samples::all().into_iter().find(|o| o.object_type == ObjectType::Drive).unwrap();
    let mut other = drive.clone();
    other.id = "other".into();
    let drives = [drive, other];
    assert_eq!(pick_drive(&drives, "0").unwrap_err().code(), 87);
    assert_eq!(pick_drive(&drives, "D0").unwrap_err().code(), 87);
    assert_eq!(pick_drive(&drives, "other").unwrap(), "other");
}

/// Issue 15: barcodes were case-sensitive on input.
#[test]
fn issue_15_barcodes_in_any_case_when_unambiguous() {
    let cartridge = samples::all().into_iter().find(|o| o.object_type == ObjectType::PhysicalMedia).unwrap();
    let with_barcode = |id: &str, barcode: &str| {
        let mut o = cartridge.clone();
        o.id = id.into();
        if let ObjectDetails::PhysicalMedia(m) = &mut o.details {
            m.barcode = Some(barcode.into());
        }
        o
    };
    let media = [with_barcode("m1", "ABC001L6"), with_barcode("m2", "XYZ001L6"), with_barcode("m3", "xyz001l6")];
    assert_eq!(pick_media(&media, "ABC001L6").unwrap(), "ABC001L6");
    assert_eq!(pick_media(&media, "abc001l6").unwrap(), "ABC001L6");
    assert_eq!(pick_media(&media, "m1").unwrap(), "m1");
    assert_eq!(pick_media(&media, "M1").unwrap(), "m1");
    // Exact matches win over case-insensitive ones; two that differ only in case are ambiguous.
    assert_eq!(pick_media(&media, "xyz001l6").unwrap(), "xyz001l6");
    let e = pick_media(&media, "Xyz001L6").unwrap_err();
    assert_eq!(e.code(), 87);
    assert!(e.message().contains("XYZ001L6, xyz001l6"), "{e}");
    // Unknown barcodes go to the daemon unchanged, which says it does not know them.
    assert_eq!(pick_media(&media, "NOPE"), Ok("NOPE".to_owned()));
    let server = FakeServer::start(standard);
    let s = Session::open_at(&server.path, None, None, 0).unwrap();
    assert_eq!(s.resolve_media("abc001l6").unwrap(), "ABC001L6");
}

/// `abort` ends the session from another thread while a call waits, and then `close` and drop send nothing.
#[test]
fn abort_closes_the_session_once_from_another_thread() {
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = StdMutex::new(release_rx);
    let server = FakeServer::start(move |call| match Method::parse(call) {
        Ok(Method::MountMedia { .. }) => {
            release_rx.lock().unwrap().recv().unwrap();
            error(NtmsError::Cancelled { message: "the session ended".into() })
        }
        _ => standard(call),
    });
    let s = Arc::new(Session::open_at(&server.path, None, None, 0).unwrap());
    let mounter = {
        let s = Arc::clone(&s);
        thread::spawn(move || s.mount(&["ABC001L6"], None, MountFlags::default(), 0, None))
    };
    s.abort().unwrap();
    s.abort().unwrap();
    release_tx.send(()).unwrap();
    assert!(matches!(mounter.join().unwrap(), Err(NtmsError::Cancelled { .. })));
    Arc::try_unwrap(s).unwrap().close().unwrap();
    let closes = server.methods().iter().filter(|m| m.ends_with("CloseSession")).count();
    assert_eq!(closes, 1);
}

#[test]
fn not_ready_fails_at_once_without_wait() {
    let server = FakeServer::start(|_| error(NtmsError::NotReady { message: "loading".into() }));
    let e = Session::open_at(&server.path, None, None, 0).unwrap_err();
    assert_eq!(e, NtmsError::NotReady { message: "loading".into() });
    assert_eq!(server.methods().len(), 1);
}

#[test]
fn not_ready_is_retried_with_wait_ready() {
    let attempts = Arc::new(StdMutex::new(0));
    let counter = Arc::clone(&attempts);
    let server = FakeServer::start(move |call| {
        let mut n = counter.lock().unwrap();
        *n += 1;
        if *n <= 2 {
            error(NtmsError::NotReady { message: "loading".into() })
        } else {
            standard(call)
        }
    });
    let opts = SessionOptions { socket: Some(server.path.clone()), wait_ready: Some(Duration::from_secs(30)) };
    let s = Session::open_with(&opts, None, None, 0).unwrap();
    assert_eq!(s.id(), "S1");
    assert_eq!(*attempts.lock().unwrap(), 3);
}

#[test]
fn other_open_errors_are_not_retried() {
    let server = FakeServer::start(|_| error(NtmsError::InvalidComputerName { message: "bad".into() }));
    let opts = SessionOptions { socket: Some(server.path.clone()), wait_ready: Some(Duration::from_secs(30)) };
    assert_eq!(Session::open_with(&opts, Some("a b"), None, 0).unwrap_err().code(), 1210);
    assert_eq!(server.methods().len(), 1);
}

#[test]
fn long_call_does_not_block_other_threads() {
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = StdMutex::new(release_rx);
    let server = FakeServer::start(move |call| {
        if call.method.ends_with("MountMedia") {
            // Hold the mount until the test says so.
            release_rx.lock().unwrap().recv().unwrap();
        }
        standard(call)
    });
    let s = Arc::new(Session::open_at(&server.path, None, None, 0).unwrap());
    let mounter = {
        let s = Arc::clone(&s);
        thread::spawn(move || s.mount(&["ABC001L6"], None, MountFlags::default(), 0, None))
    };
    // This completes while the mount is still held: it must be on another connection.
    loop {
        let mounted_started = server.methods().iter().any(|m| m.ends_with("MountMedia"));
        if mounted_started {
            break;
        }
        thread::yield_now();
    }
    let libs = s.enumerate(None, ObjectType::Library).unwrap();
    assert_eq!(libs.len(), 1);
    release_tx.send(()).unwrap();
    assert_eq!(mounter.join().unwrap().unwrap().request, "R1");
    assert_eq!(s.idle_connections(), 2);
}

#[test]
fn streamed_replies() {
    let server = FakeServer::start(standard);
    let s = Session::open_at(&server.path, None, None, 0).unwrap();
    let got: Vec<Notification> = s.notifications(Some(ObjectType::Drive)).unwrap().map(Result::unwrap).collect();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].object, "a");
    assert_eq!(got[1].object_type, ObjectType::Library);
    let calls = server.calls.lock().unwrap().clone();
    let wait = calls.iter().find(|c| c.method.ends_with("WaitForNotification")).unwrap();
    assert!(wait.more);

    let mut conn = Connection::connect(&server.path).unwrap();
    let params = json!({"session": "S1"}).as_object().unwrap().clone();
    let all: Vec<Value> =
        conn.call_more("io.rsmd.Ntms.WaitForNotification", params.clone()).unwrap().map(Result::unwrap).collect();
    assert_eq!(all.len(), 2);
    assert!(!conn.is_broken());
    // Abandoning a stream makes the connection unusable.
    let mut replies = conn.call_more("io.rsmd.Ntms.WaitForNotification", params).unwrap();
    assert!(replies.next().unwrap().is_ok());
    drop(replies);
    assert!(conn.is_broken());
    assert_eq!(conn.call("org.varlink.service.GetInfo", Map::new()).unwrap_err().code(), 2250);
}

#[test]
fn streamed_reply_to_plain_call_is_a_protocol_error() {
    let server = FakeServer::start(|_| Answer::Messages(vec![json!({"parameters": {}, "continues": true})]));
    let mut conn = Connection::connect(&server.path).unwrap();
    assert_eq!(conn.call("io.rsmd.Ntms.CloseSession", Map::new()).unwrap_err().code(), 13);
    assert!(conn.is_broken());
}

#[test]
fn hangup_mid_call_is_not_connected() {
    let server = FakeServer::start(|call| match Method::parse(call) {
        Ok(Method::OpenSession { .. }) => standard(call),
        _ => Answer::Hangup,
    });
    let s = Session::open_at(&server.path, None, None, 0).unwrap();
    let e = s.enumerate(None, ObjectType::Drive).unwrap_err();
    assert_eq!(e.code(), 2250);
    assert!(e.message().contains("closed the connection"), "{e}");
    // The broken connection was not put back; the next call opens a new one (which the fake also hangs up).
    assert_eq!(s.idle_connections(), 0);
}

#[test]
fn garbage_replies_are_invalid_messages() {
    let cases: Vec<(&[u8], u32)> = vec![
        (b"not json\0", 13),
        (b"[1]\0", 13),
        (b"{\"error\":1}\0", 13),
        (b"{\"parameters\":{\"a\":\"\xff\"}}\0", 13),
    ];
    for (bytes, code) in cases {
        let owned = bytes.to_vec();
        let server = FakeServer::start(move |_| Answer::Raw(owned.clone()));
        let mut conn = Connection::connect(&server.path).unwrap();
        let e = conn.call("org.varlink.service.GetInfo", Map::new()).unwrap_err();
        assert_eq!(e.code(), code, "{bytes:?}: {e}");
        assert!(conn.is_broken());
    }
}

#[test]
fn reply_of_wrong_shape_is_invalid_message() {
    let server = FakeServer::start(|call| match Method::parse(call) {
        Ok(Method::OpenSession { .. }) => standard(call),
        _ => reply(json!({"objects": 5})),
    });
    let s = Session::open_at(&server.path, None, None, 0).unwrap();
    let e = s.enumerate(None, ObjectType::Drive).unwrap_err();
    assert_eq!(e.code(), 13);
    assert!(e.message().starts_with("unexpected reply"));
}

#[test]
fn oversized_reply_is_message_too_large() {
    let server = FakeServer::start(|_| Answer::Raw(vec![b' '; crate::proto::MAX_MESSAGE + 10]));
    let mut conn = Connection::connect(&server.path).unwrap();
    conn.set_reply_limit(crate::proto::MAX_MESSAGE);
    assert_eq!(conn.call("org.varlink.service.GetInfo", Map::new()).unwrap_err().code(), 4336);
}

#[test]
fn replies_split_across_reads_are_reassembled() {
    // A reply of ~200 KiB arrives in many reads.
    let big = "x".repeat(200 * 1024);
    let server =
        FakeServer::start(move |_| Answer::Raw(Reply::new(json!({"big": big}).as_object().unwrap().clone()).encode()));
    let mut conn = Connection::connect(&server.path).unwrap();
    let v = conn.call("org.varlink.service.GetInfo", Map::new()).unwrap();
    assert_eq!(v["big"].as_str().unwrap().len(), 200 * 1024);
}

#[test]
fn service_introspection() {
    let server = FakeServer::start(standard);
    let mut conn = Connection::open(Some(&server.path)).unwrap();
    let info = conn.get_info().unwrap();
    assert_eq!(info.vendor, "rsmd");
    assert!(info.interfaces.contains(&"io.rsmd.Ntms".to_owned()));
    let idl = conn.get_interface_description("io.rsmd.Ntms").unwrap();
    assert!(idl.contains("method MountMedia("));
    let e = conn.get_interface_description("com.example").unwrap_err();
    assert_eq!(e.code(), 1817);
    assert!(!conn.is_broken());
}
