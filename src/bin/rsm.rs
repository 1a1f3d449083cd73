//! `rsm`: the command-line client of rsmd, modelled on rsm.exe and mtx.
//!
//! `rsm status --mtx` prints exactly what `mtx status` prints, so existing scripts can parse it; the other
//! commands print readable tables (cartridges by barcode, elements by mtx's numbers), or JSON with `--json`: one
//! JSON document per command, errors included (`{"error": {"name", "code", "message"}}`), and one object per
//! line for `watch`.
//!
//! Errors are printed once, as `rsm: <message>: <Name> (<code>)`, and the exit status says what kind of failure
//! it was ([`EXIT_STATUS`], also in `rsm --help`). Output never panics: a closed pipe (`rsm watch | head -1`)
//! ends the output quietly.
//!
//! Interrupting a command that waits for the hardware (`mount`, `dismount`) cancels its request: rsm ends its
//! session, rsmd cancels what the session waits for (undoing a move under way), and rsm says what became of it
//! and exits 130 (143 for SIGTERM). A second interrupt stops waiting for rsmd's confirmation.

use std::io::{ErrorKind, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::{ArgGroup, Parser, Subcommand, ValueEnum};
use nix::sys::signal::{SigSet, Signal};
use serde::Serialize;
use serde_json::{json, Value};

use rsmd::client::format::{self, Names};
use rsmd::client::{Connection, Session, SessionOptions, Timeouts, DEFAULT_TIMEOUTS};
use rsmd::proto::types::{InventoryMode, MountFlags, MountReply};
use rsmd::proto::{DismountTarget, NtmsError, ObjectDetails, ObjectInfo, ObjectType, PROTOCOL_VERSION};

/// The exit statuses, as `rsm --help` and the README show them.
const EXIT_STATUS: &str = "\
Exit status:
  0    success
  1    failed: rsmd tried and could not (or refused for a reason not below); output could not be written
  2    usage: a bad command line or parameter value
  3    not connected: rsmd is not running or not reachable at the socket
  4    not found: no such cartridge, drive, library or request
  5    access denied: the socket, cartridge or request belongs to someone else
  6    busy or timed out: in use, offline, still loading, or no answer in time
  130  interrupted (Ctrl-C; 143 for SIGTERM): the mount or dismount waited for was cancelled

The socket is --socket, else $RSMD_SOCKET, else /run/rsmd/rsmd.sock when it exists, else the demo's
($XDG_RUNTIME_DIR/rsmd-demo/rsmd.sock, then /tmp/rsmd-demo-UID/rsmd.sock).";

/// Command-line client for rsmd, the Removable Storage Manager.
#[derive(Debug, Parser)]
#[command(name = "rsm", version, after_help = EXIT_STATUS)]
struct Cli {
    /// rsmd's socket [default: $RSMD_SOCKET, else /run/rsmd/rsmd.sock, else the demo's]
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Print results and errors as JSON
    #[arg(long, global = true)]
    json: bool,
    /// Wait up to this many seconds for rsmd to start and finish loading
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 0)]
    wait: u64,
    /// Give up when rsmd does not answer a quick call within this many seconds (a mount or dismount waits for
    /// the robot as long as it needs)
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = DEFAULT_TIMEOUTS.reply.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    reply_timeout: u64,
    /// The application the session speaks for: media allocated by `rsm allocate` belong to it, and only its
    /// sessions (and administrators) mount them
    #[arg(long, global = true, value_name = "NAME", default_value = "rsm")]
    application: String,
    /// The rsmd of another host, reached with `ssh HOST rsm bridge` (the user's own ssh configuration, keys and
    /// agent; $RSM_SSH names another ssh command); this host by any of its names connects directly
    #[arg(long, global = true, value_name = "[USER@]HOST[:PORT]")]
    host: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show libraries, drives (with their media and /dev nodes), slots and mail slots
    Status {
        /// Print exactly mtx's `status` format
        #[arg(long)]
        mtx: bool,
    },
    /// List objects of one type (library, drive, changer, storage_slot, ie_port, media_type, physical_media,
    /// media_pool, lib_request, op_request, computer; rsm.exe names such as storageslot or opreq work too)
    View {
        /// Object type
        #[arg(value_parser = parse_object_type)]
        object_type: ObjectType,
        /// Only objects inside this container (a library or pool id)
        #[arg(long, value_name = "ID")]
        container: Option<String>,
    },
    /// Show one object by id, a cartridge by barcode (in any case) or a pool by path
    Info {
        /// Object id or barcode
        id: String,
    },
    /// Mount a cartridge and wait until the drive is ready (Ctrl-C cancels the mount)
    Mount {
        /// Barcode, in any case (or media id)
        barcode: String,
        /// Drive number (from 0, as mtx counts), serial number or id
        #[arg(long, value_name = "N|SERIAL|ID")]
        drive: Option<String>,
        /// Give up after this many seconds
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
        /// Mount for writing (default: reading)
        #[arg(long)]
        write: bool,
        /// Return the request id at once instead of waiting
        #[arg(long)]
        nowait: bool,
        /// Fail at once if the cartridge is in use instead of waiting for it
        #[arg(long)]
        error_if_unavailable: bool,
        /// Request priority, -15 (lowest) to 15 (highest)
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        priority: i32,
        /// A cartridge available in Free is first allocated into this application pool for --application
        #[arg(long, value_name = "POOL")]
        pool: Option<String>,
    },
    /// Dismount a cartridge, or whatever a drive holds (Ctrl-C cancels the dismount)
    #[command(group(ArgGroup::new("what").required(true).args(["barcode", "drive"])))]
    Dismount {
        /// Barcode, in any case (or media id)
        barcode: Option<String>,
        /// Drive number, serial number or id
        #[arg(long, value_name = "N|SERIAL|ID")]
        drive: Option<String>,
        /// Leave the cartridge loaded for the library's deferred-dismount delay
        #[arg(long)]
        deferred: bool,
    },
    /// List library requests
    Requests,
    /// Cancel a library request, or withdraw an operator request (by its number)
    Cancel {
        /// Library request id, or operator request number
        id: String,
    },
    /// Move a queued mount or dismount up or down the robot's queue
    Reorder {
        /// Request id
        id: String,
        /// New priority, -15 (lowest) to 15 (highest)
        #[arg(long, allow_negative_numbers = true)]
        priority: i32,
    },
    /// Re-read a library's inventory (all libraries when none is given)
    Inventory {
        /// Library id or name
        library: Option<String>,
        /// How to read it
        #[arg(long, value_enum, default_value_t = ModeArg::Default)]
        mode: ModeArg,
        /// Same as --mode fast
        #[arg(long, conflicts_with_all = ["mode", "full", "label"])]
        fast: bool,
        /// Same as --mode full
        #[arg(long, conflicts_with_all = ["mode", "label"])]
        full: bool,
        /// Same as --mode label: read the first block of every cartridge without a barcode
        #[arg(long, conflicts_with = "mode")]
        label: bool,
        /// Return once the inventory is queued instead of when it is done
        #[arg(long)]
        nowait: bool,
    },
    /// Print every change rsmd reports, one line each (with --json one JSON object per line), until interrupted
    Watch {
        /// Only changes of objects of this type
        #[arg(long = "type", value_name = "TYPE", value_parser = parse_object_type)]
        object_type: Option<ObjectType>,
    },
    /// Show rsm's version, rsmd's version and interfaces, and the libraries' states
    Version,
    /// List media pools (system pools Free, Import, Unrecognized per media type, and application pools)
    Pools,
    /// Create, delete or change a media pool, or move a cartridge into one
    Pool {
        #[command(subcommand)]
        action: PoolCommand,
    },
    /// List cartridges with their pool, side state, place and owner
    Media {
        /// Only the cartridges of this pool (path or id; Free, Import, Unrecognized: every media type)
        #[arg(long, value_name = "POOL")]
        pool: Option<String>,
    },
    /// Allocate a cartridge of an application pool (a given one, or any available) for --application
    Allocate {
        /// Application pool path (`Bacula\Full`) or id
        pool: String,
        /// This cartridge (available in the pool or in Free, or in Import)
        barcode: Option<String>,
        /// Fail at once when none is available instead of waiting
        #[arg(long)]
        error_if_unavailable: bool,
        /// Give up waiting after this many seconds
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
    },
    /// Deallocate a cartridge (by logical media id or barcode): it becomes available again
    Deallocate {
        /// Logical media id or barcode
        media: String,
    },
    /// Mark an allocated cartridge complete: it is never written again
    Complete {
        /// Logical media id or barcode
        media: String,
    },
    /// Exchange the cartridges behind two logical media of one pool
    Swap {
        /// Logical media id or barcode
        first: String,
        /// Logical media id or barcode
        second: String,
    },
    /// Decommission an available cartridge: it is never allocated again
    Decommission {
        /// Barcode or id
        barcode: String,
    },
    /// Move cartridges to free mail slots for the operator to take, one cycle of the port (waits until the last
    /// is there; when they do not all fit, the rest wait for the operator to empty the mail slots)
    Eject {
        /// Barcodes or ids (of one library)
        #[arg(required = true)]
        barcodes: Vec<String>,
        /// Fail at once when they do not all fit in the free mail slots
        #[arg(long)]
        error_if_full: bool,
    },
    /// Unlock a library's door for the operator: robot work waits until it has been opened and closed
    Door {
        /// Library id or name (default: the only library)
        library: Option<String>,
        /// Once the door is closed, have the robot check every element (INITIALIZE ELEMENT STATUS) before reading
        #[arg(long)]
        full: bool,
    },
    /// Clean a drive with a cleaning cartridge of its library (waits until it is clean)
    Clean {
        /// Drive number (from 0, as mtx counts), serial number or id
        drive: String,
    },
    /// List operator requests (the active ones; --all: the answered ones too)
    Operator {
        /// Also the satisfied, refused and cancelled ones
        #[arg(long)]
        all: bool,
    },
    /// Tell rsmd an operator request is done (the work waiting for it goes on)
    Satisfy {
        /// Operator request number or id
        id: String,
    },
    /// Refuse an operator request (the work waiting for it fails RequestRefused)
    Refuse {
        /// Operator request number or id
        id: String,
        /// Why, for whoever submitted it
        #[arg(long)]
        reason: Option<String>,
    },
    /// Submit an operator request (an application's message, or a typed request)
    Submit {
        /// The text shown to the operator
        text: String,
        /// What it asks
        #[arg(long, value_enum, default_value_t = OpKindArg::Message)]
        kind: OpKindArg,
        /// The object it concerns (barcode, drive, library, id)
        #[arg(long)]
        object: Option<String>,
    },
    /// Wait until an operator request is answered: exit 0 when satisfied, 1 when refused, cancelled or timed out
    WaitOperator {
        /// Operator request number or id
        id: String,
        /// Give up after this many seconds
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
    },
    /// Take the cartridges in a library's mail slots into storage, each to its home slot when free (waits)
    Inject {
        /// Library id or name (default: the only library)
        library: Option<String>,
    },
    /// Forget an offline cartridge that no application holds
    DeleteMedia {
        /// Barcode or id
        barcode: String,
    },
    /// Use a library, drive or cartridge again
    Enable {
        /// Barcode, drive number/serial/id, or library name/id
        object: String,
    },
    /// Take a library, drive or cartridge out of use (a disabled drive is never chosen, a disabled cartridge
    /// never mounted or allocated)
    Disable {
        /// Barcode, drive number/serial/id, or library name/id
        object: String,
    },
    /// Print a completion script for a shell (bash, zsh, fish): `rsm completions bash >
    /// /usr/share/bash-completion/completions/rsm`
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Print the rsm(1) manual page (roff)
    Man,
    /// mtx through rsmd: `rsm mtx -f DEVICE status | load S D | unload S D | transfer S D | inquiry | ...`, printing
    /// what mtx prints (DEVICE: the changer's /dev/sgN or /dev/tape/by-id path, or rsmd:LIBRARY). Installed as
    /// `mtx` (a link named mtx to rsm), rsm takes mtx's command line as it is
    Mtx {
        /// mtx's arguments
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "MTX-ARGS")]
        args: Vec<String>,
    },
    /// Copy standard input to rsmd's local socket and its replies to standard output: what `rsm --host` (and
    /// `varlink --bridge "ssh HOST rsm bridge"`) run on the library's host through ssh. The caller is the ssh user
    Bridge,
    /// Bacula's changer command, as Debian's mtx-changer: `rsm changer CTL CMD SLOT ARCHIVE_DEVICE DRIVE_INDEX`
    /// (Changer Command = "/usr/bin/rsm changer %c %o %S %a %d"); installed as `mtx-changer`, its arguments as they are
    Changer {
        /// CTL CMD [SLOT ARCHIVE_DEVICE DRIVE_INDEX]
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
        args: Vec<String>,
    },
}

/// Which changer front runs.
#[derive(Debug, Clone, Copy)]
enum Front {
    Mtx,
    Changer,
}

/// Runs mtx's or mtx-changer's command line through rsmd: their output on their streams, their exit status. A
/// daemon that cannot be reached is an mtx-style error (standard error, status 1).
fn front(
    kind: Front,
    args: &[String],
    opts: &SessionOptions,
    timeouts: Timeouts,
    application: &str,
    host: Option<&str>,
) -> ExitCode {
    use std::io::Write;
    // Bacula's argument checks come before anything else (the script's do).
    let session = match Session::open_with_timeouts(opts, timeouts, host, Some(application), 0) {
        Ok(s) => s,
        Err(e) => {
            if let Front::Changer = kind {
                let r = rsmd::client::mtx::changer_args_error(args);
                if let Some(r) = r {
                    let _ = std::io::stdout().write_all(r.stdout.as_bytes());
                    return ExitCode::from(u8::try_from(r.code).unwrap_or(1));
                }
            }
            eprintln!(
                "{}: cannot reach rsmd: {}",
                if let Front::Mtx = kind { "mtx" } else { "mtx-changer" },
                rsmd::error_chain(&e)
            );
            return ExitCode::from(1);
        }
    };
    let r = match kind {
        Front::Mtx => rsmd::client::mtx::mtx(&session, args),
        Front::Changer => rsmd::client::mtx::changer(&session, args),
    };
    let _ = session.close();
    let _ = std::io::stdout().write_all(r.stdout.as_bytes());
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().write_all(r.stderr.as_bytes());
    ExitCode::from(u8::try_from(r.code).unwrap_or(1))
}

/// `rsm pool …`.
#[derive(Debug, Subcommand)]
enum PoolCommand {
    /// Create an application pool (its parent must exist: create `Bacula`, then `Bacula\Full`)
    Create {
        /// Pool path
        path: String,
        /// The media type it holds (`LTO-6`; default: the type of its first cartridge)
        #[arg(long = "type", value_name = "TYPE")]
        media_type: Option<String>,
        /// Allocation draws from Free when the pool has none available
        #[arg(long)]
        draw_from_free: bool,
        /// Deallocated cartridges go back to Free
        #[arg(long)]
        return_to_free: bool,
        /// Decommission a cartridge after this many allocations
        #[arg(long, value_name = "N")]
        max_allocations: Option<u32>,
    },
    /// Delete an empty application pool
    Delete {
        /// Pool path or id
        pool: String,
    },
    /// Move a cartridge into a pool (`Free` for scratch)
    Move {
        /// Barcode or id
        barcode: String,
        /// Pool path or id
        pool: String,
    },
    /// Change a pool's policy or description (only the fields given)
    Set {
        /// Pool path or id
        pool: String,
        /// Draw from Free when empty
        #[arg(long, value_name = "BOOL")]
        draw_from_free: Option<bool>,
        /// Return deallocated cartridges to Free
        #[arg(long, value_name = "BOOL")]
        return_to_free: Option<bool>,
        /// Allocations before a cartridge is decommissioned (0: no limit)
        #[arg(long, value_name = "N")]
        max_allocations: Option<u32>,
        /// Description
        #[arg(long)]
        description: Option<String>,
        /// New name (the last level of the path)
        #[arg(long)]
        name: Option<String>,
        /// Refuse the change if the pool's version is no longer this one (from `rsm info POOL --json`)
        #[arg(long)]
        version: Option<u64>,
    },
}

/// Inventory modes on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    /// The library's configured method
    Default,
    /// Read element status with barcodes
    Fast,
    /// Have the robot scan every slot first
    Full,
    /// Mount each cartridge without a barcode and read its first block (ANSI/IBM, LTFS, Bacula, Amanda labels)
    #[value(alias = "omid")]
    Label,
}

impl From<ModeArg> for InventoryMode {
    fn from(m: ModeArg) -> InventoryMode {
        match m {
            ModeArg::Default => InventoryMode::Default,
            ModeArg::Fast => InventoryMode::Fast,
            ModeArg::Full => InventoryMode::Full,
            ModeArg::Label => InventoryMode::Omid,
        }
    }
}

/// Operator request kinds on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum OpKindArg {
    /// A message
    Message,
    /// Put new media in the library
    NewMedia,
    /// Insert or replace a cleaning cartridge
    Cleaner,
    /// Service a device
    DeviceService,
    /// Move media
    MoveMedia,
}

impl From<OpKindArg> for rsmd::proto::types::OpRequestKind {
    fn from(k: OpKindArg) -> Self {
        use rsmd::proto::types::OpRequestKind as K;
        match k {
            OpKindArg::Message => K::Message,
            OpKindArg::NewMedia => K::NewMedia,
            OpKindArg::Cleaner => K::Cleaner,
            OpKindArg::DeviceService => K::DeviceService,
            OpKindArg::MoveMedia => K::MoveMedia,
        }
    }
}

/// Accepts wire names (`storage_slot`) and rsm.exe's (`storageslot`, `opreq`, `request`).
fn parse_object_type(s: &str) -> Result<ObjectType, String> {
    let lower = s.to_ascii_lowercase().replace('-', "_");
    if let Some(t) = ObjectType::from_wire_name(&lower) {
        return Ok(t);
    }
    let t = match lower.replace('_', "").as_str() {
        "storageslot" | "slot" | "slots" => ObjectType::StorageSlot,
        "ieport" | "port" | "mailslot" => ObjectType::IePort,
        "mediatype" => ObjectType::MediaType,
        "physicalmedia" | "media" => ObjectType::PhysicalMedia,
        "mediapool" | "pool" => ObjectType::MediaPool,
        "request" | "librequest" => ObjectType::LibRequest,
        "opreq" | "oprequest" => ObjectType::OpRequest,
        "libraries" => ObjectType::Library,
        "drives" => ObjectType::Drive,
        _ => {
            let names: Vec<&str> = ObjectType::ALL.iter().map(|t| t.wire_name()).collect();
            return Err(format!("unknown object type '{s}' (one of: {})", names.join(", ")));
        }
    };
    Ok(t)
}

/// Why rsm stops short of success.
#[derive(Debug)]
enum Failure {
    /// rsmd (or the client library on its behalf) reported an error.
    Rsmd(NtmsError),
    /// The command line asks for something impossible.
    Usage(String),
    /// A signal interrupted a command that waited; `message` says what became of its request.
    Interrupted { signal: Signal, message: String },
    /// Standard output was closed by its reader (`| head`): nothing more to say to anyone.
    OutputClosed,
    /// Standard output failed otherwise.
    Output(std::io::Error),
}

impl From<NtmsError> for Failure {
    fn from(e: NtmsError) -> Failure {
        Failure::Rsmd(e)
    }
}

/// The exit status for an error of rsmd (see [`EXIT_STATUS`]).
fn exit_status(e: &NtmsError) -> u8 {
    match e {
        NtmsError::InvalidParameter { .. } => 2,
        NtmsError::NotConnected { .. } => 3,
        NtmsError::ObjectNotFound { .. }
        | NtmsError::InvalidLibrary { .. }
        | NtmsError::InvalidMediaPool { .. }
        | NtmsError::InvalidDriveObject { .. } => 4,
        NtmsError::AccessDenied { .. } => 5,
        NtmsError::Busy { .. }
        | NtmsError::Timeout { .. }
        | NtmsError::NotReady { .. }
        | NtmsError::MediaUnavailable { .. }
        | NtmsError::DeviceNotAvailable { .. }
        | NtmsError::LibraryOffline { .. }
        | NtmsError::MediaOffline { .. } => 6,
        _ => 1,
    }
}

impl Failure {
    fn exit_status(&self) -> u8 {
        match self {
            Failure::Rsmd(e) => exit_status(e),
            Failure::Usage(_) => 2,
            Failure::Interrupted { signal, .. } => 128u8.saturating_add(u8::try_from(*signal as i32).unwrap_or(0)),
            Failure::OutputClosed => 0,
            Failure::Output(_) => 1,
        }
    }

    /// The error as `--json` prints it.
    fn to_json(&self) -> Value {
        let (name, code, message) = match self {
            Failure::Rsmd(e) => (e.name().to_owned(), Some(e.code()), e.message().to_owned()),
            Failure::Usage(m) => ("Usage".to_owned(), None, m.clone()),
            Failure::Interrupted { message, .. } => ("Interrupted".to_owned(), None, message.clone()),
            Failure::OutputClosed => ("OutputClosed".to_owned(), None, String::new()),
            Failure::Output(e) => ("Output".to_owned(), None, format!("cannot write the output: {e}")),
        };
        json!({ "error": { "name": name, "code": code, "message": message }, "exit_status": self.exit_status() })
    }

    /// The error as a line on standard error.
    fn text(&self) -> String {
        match self {
            Failure::Rsmd(e) => format!("rsm: {}", rsmd::error_chain(e)),
            Failure::Usage(m) => format!("rsm: {m}"),
            Failure::Interrupted { message, .. } => format!("rsm: interrupted: {message}"),
            Failure::OutputClosed => String::new(),
            Failure::Output(e) => format!("rsm: cannot write the output: {e}"),
        }
    }
}

/// Writes `text` to standard output. A reader that went away (`EPIPE`) is not an error worth a panic or a
/// message: it ends the command quietly.
fn out(text: &str) -> Result<(), Failure> {
    write_all(text.as_bytes())
}

/// Writes to standard output; a closed pipe ends quietly.
fn write_all(bytes: &[u8]) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Err(Failure::OutputClosed),
        Err(e) => Err(Failure::Output(e)),
    }
}

fn print_json(value: &impl Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| NtmsError::Internal { message: format!("cannot print JSON: {e}") })?;
    out(&format!("{text}\n"))
}

/// Names for every object an id may refer to (libraries, elements, cartridges, pools, media types).
fn names(session: &Session) -> Result<Names, NtmsError> {
    let mut objects = Vec::new();
    for t in [
        ObjectType::Library,
        ObjectType::Drive,
        ObjectType::StorageSlot,
        ObjectType::IePort,
        ObjectType::PhysicalMedia,
        ObjectType::MediaPool,
        ObjectType::MediaType,
    ] {
        objects.extend(session.enumerate(None, t)?);
    }
    Ok(Names::new(&objects))
}

fn status(session: &Session, json: bool, mtx: bool) -> Result<(), Failure> {
    let mut objects: Vec<ObjectInfo> = Vec::new();
    for t in [ObjectType::Library, ObjectType::Changer, ObjectType::Drive, ObjectType::StorageSlot, ObjectType::IePort]
    {
        objects.extend(session.enumerate(None, t)?);
    }
    if json {
        return print_json(&objects);
    }
    if mtx {
        let text = format::mtx_status(&objects);
        if text.is_empty() {
            return Err(NtmsError::ObjectNotFound { message: "rsmd manages no library".into() }.into());
        }
        out(&text)
    } else {
        out(&format::status_table(&objects))
    }
}

fn inventory(
    session: &Session,
    json: bool,
    library: Option<&str>,
    mode: InventoryMode,
    nowait: bool,
) -> Result<(), Failure> {
    let libraries = session.enumerate(None, ObjectType::Library)?;
    let chosen: Vec<&ObjectInfo> = match library {
        Some(want) => {
            let found: Vec<&ObjectInfo> = libraries.iter().filter(|l| l.id == want).collect();
            let found = if found.is_empty() { libraries.iter().filter(|l| l.name == want).collect() } else { found };
            match found.len() {
                0 => return Err(NtmsError::InvalidLibrary { message: format!("no library '{want}'") }.into()),
                1 => found,
                _ => {
                    return Err(NtmsError::InvalidParameter {
                        message: format!("several libraries are named '{want}'; give the id"),
                    }
                    .into())
                }
            }
        }
        None => libraries.iter().filter(|l| matches!(l.details, ObjectDetails::Library(_))).collect(),
    };
    // Subscribed before anything is queued, so that no change is missed.
    let notes = if nowait { None } else { Some(session.notifications(None)?) };
    let mut queued = Vec::new();
    for lib in chosen {
        let request = session.inventory(&lib.id, mode)?;
        if !json && nowait {
            out(&format!("Inventory of {} queued as request {request}\n", lib.name))?;
        }
        queued.push((lib.name.clone(), lib.id.clone(), request));
    }
    let Some(notes) = notes else {
        if json {
            let v: Vec<Value> = queued.iter().map(|(_, l, r)| json!({"library": l, "request": r})).collect();
            print_json(&v)?;
        }
        return Ok(());
    };
    // Until every inventory ends; on a terminal, the elements read so far.
    let tty = !json && std::io::stderr().is_terminal();
    let ended = |s: &Session, request: &str| match s.get_object_information(request).map(|o| o.details) {
        Ok(ObjectDetails::LibRequest(r)) => match r.state {
            rsmd::proto::types::RequestState::Complete => Some(Ok(())),
            rsmd::proto::types::RequestState::Failed | rsmd::proto::types::RequestState::Cancelled => {
                Some(Err(r.error.unwrap_or_else(|| format!("{:?}", r.state).to_lowercase())))
            }
            _ => None,
        },
        Ok(_) => Some(Err("not a library request".into())),
        Err(e) => Some(Err(rsmd::error_chain(&e))),
    };
    let mut outcome: Vec<Option<Result<(), String>>> = queued.iter().map(|(_, _, r)| ended(session, r)).collect();
    let mut shown: HashMap<String, (u32, u32)> = HashMap::new();
    let mut notes = notes;
    while outcome.iter().any(Option::is_none) {
        let Some(n) = notes.next() else {
            return Err(NtmsError::NotConnected { message: "rsmd ended the notifications".into() }.into());
        };
        let n = n?;
        if tty && n.object_type == ObjectType::Library {
            if let Some((name, _, _)) = queued.iter().find(|(_, l, _)| *l == n.object) {
                if let Ok(ObjectDetails::Library(d)) = session.get_object_information(&n.object).map(|o| o.details) {
                    if let (Some(done), Some(total)) = (d.scan_done, d.scan_total) {
                        if shown.insert(n.object.clone(), (done, total)) != Some((done, total)) {
                            eprintln!("rsm: {name}: {done} of {total} elements read");
                        }
                    }
                }
            }
        }
        for (i, (_, _, request)) in queued.iter().enumerate() {
            if outcome[i].is_none() {
                outcome[i] = ended(session, request);
            }
        }
    }
    let results: Vec<Value> = queued
        .iter()
        .zip(&outcome)
        .map(|((_, l, r), o)| match o {
            Some(Err(e)) => json!({"library": l, "request": r, "state": "failed", "error": e}),
            _ => json!({"library": l, "request": r, "state": "complete"}),
        })
        .collect();
    let failed = outcome.iter().find_map(|o| o.as_ref().and_then(|r| r.as_ref().err()));
    if json {
        // One JSON document: the results, or the error.
        if failed.is_none() {
            print_json(&results)?;
        }
    } else {
        for ((name, _, _), o) in queued.iter().zip(&outcome) {
            match o {
                Some(Err(e)) => out(&format!("Inventory of {name} failed: {e}\n"))?,
                _ => out(&format!("Inventory of {name} complete\n"))?,
            }
        }
    }
    match failed {
        Some(e) => Err(NtmsError::LibraryOffline { message: format!("an inventory failed: {e}") }.into()),
        None => Ok(()),
    }
}

/// What ended a wait for a call that waits for the hardware.
enum Event<T> {
    Signal(Signal),
    Done(Result<T, NtmsError>),
}

/// Runs `call` (a mount or dismount of `session`) while listening for SIGINT and SIGTERM. The first signal ends
/// the session ([`Session::abort`]): rsmd cancels the request, undoing a move under way, and the call returns
/// (usually `Cancelled`). A second signal exits at once. Returns the call's result and the signal, if any.
fn wait_for<T: Send + 'static>(
    session: &Session,
    what: &str,
    call: impl FnOnce() -> Result<T, NtmsError> + Send,
) -> (Result<T, NtmsError>, Option<Signal>) {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    // Blocked before any thread starts, so every thread inherits the mask and only sigwait() sees them.
    if signals.thread_block().is_err() {
        return (call(), None);
    }
    let (tx, rx) = mpsc::channel::<Event<T>>();
    // The signal thread outlives this function when no signal comes (it waits in sigwait()); it only sends, and
    // stops at the first signal after the receiver is gone.
    let signal_tx = tx.clone();
    std::thread::spawn(move || {
        while let Ok(sig) = signals.wait() {
            if signal_tx.send(Event::Signal(sig)).is_err() {
                break;
            }
        }
    });
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let _ = tx.send(Event::Done(call()));
        });
        let mut interrupted = None;
        loop {
            match rx.recv() {
                Ok(Event::Done(result)) => {
                    // A signal that raced with the reply counts too.
                    while let Ok(event) = rx.try_recv() {
                        if let Event::Signal(sig) = event {
                            interrupted = interrupted.or(Some(sig));
                        }
                    }
                    return (result, interrupted);
                }
                Ok(Event::Signal(sig)) if interrupted.is_none() => {
                    interrupted = Some(sig);
                    eprintln!("rsm: cancelling the {what} (interrupt again to stop waiting for rsmd to confirm)");
                    scope.spawn(|| {
                        if let Err(e) = session.abort() {
                            eprintln!("rsm: cannot cancel: {}", rsmd::error_chain(&e));
                        }
                    });
                }
                Ok(Event::Signal(sig)) => {
                    eprintln!(
                        "rsm: interrupted again: not waiting for rsmd; it cancels the {what} when rsm's \
                         connections close"
                    );
                    std::process::exit(128 + sig as i32);
                }
                Err(_) => return (Err(NtmsError::Internal { message: "the call's thread vanished".into() }), None),
            }
        }
    })
}

/// The drive of a mount reply as people and mtx count it, with its serial and id.
fn drive_text(session: &Session, reply: &MountReply) -> String {
    let id = reply.drive.as_deref().unwrap_or("-");
    let drive = reply.drive.as_deref().and_then(|d| session.get_object_information(d).ok());
    match drive.as_ref().map(|o| &o.details) {
        Some(ObjectDetails::Drive(dd)) => {
            format!("drive {} ({}, id {id})", dd.number, dd.serial.as_deref().unwrap_or("no serial"))
        }
        _ => format!("drive {id}"),
    }
}

/// Follows a mount of cartridge `media` (id) on its own session and prints each new stage to standard error (`rsm:
/// ABC001L6: queued behind 2 requests`, `… moving to drive 1`, `… drive 1 loading`) until `done`. The thread is
/// left to end with the process: it waits on rsmd's notifications.
fn progress(
    socket: std::path::PathBuf,
    barcode: String,
    media: String,
    done: Arc<AtomicBool>,
) -> std::sync::mpsc::Receiver<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok(s) = Session::open_at(&socket, None, Some("rsm"), 0) else { return };
        let notes = s.notifications(None);
        let _ = tx.send(());
        let Ok(notes) = notes else { return };
        let mut last = String::new();
        for n in notes {
            if n.is_err() || done.load(Ordering::SeqCst) {
                return;
            }
            let Some(stage) = mount_stage(&s, &media) else { continue };
            if stage != last && !done.load(Ordering::SeqCst) {
                eprintln!("rsm: {barcode}: {stage}");
                last = stage;
            }
        }
    });
    rx
}

/// Where the open mount of cartridge `media` stands, in words.
fn mount_stage(s: &Session, media: &str) -> Option<String> {
    use rsmd::proto::types::{RequestOperation, RequestState};
    let requests = s.requests().ok()?;
    let open = |r: &rsmd::proto::types::LibRequestDetails| {
        matches!(r.state, RequestState::Queued | RequestState::InProgress | RequestState::Waiting)
    };
    let details = |o: &ObjectInfo| match &o.details {
        ObjectDetails::LibRequest(r) => Some(r.clone()),
        _ => None,
    };
    let all: Vec<_> = requests.iter().filter_map(details).filter(open).collect();
    let mine = all.iter().find(|r| r.operation == RequestOperation::Mount && r.media.as_deref() == Some(media))?;
    let drive = mine.drive.as_deref().and_then(|d| s.get_object_information(d).ok());
    let drive = drive.as_ref().and_then(|o| match &o.details {
        ObjectDetails::Drive(d) => Some(d.number),
        _ => None,
    });
    Some(match (mine.state, drive) {
        // Waiting with a drive: the cartridge is in it and the drive threads the tape (in progress: the robot
        // moves it; the drive shows `loading` for the whole job).
        (RequestState::Waiting, Some(n)) => format!("drive {n} loading, waiting for it to be ready"),
        (RequestState::Waiting, None) => "waiting for the cartridge (in use)".to_owned(),
        (RequestState::Queued, _) => {
            let ahead = all
                .iter()
                .filter(|r| {
                    r.library == mine.library && r.submitted < mine.submitted && r.state != RequestState::Waiting
                })
                .count();
            match ahead {
                0 => "queued".to_owned(),
                1 => "queued behind 1 request".to_owned(),
                n => format!("queued behind {n} requests"),
            }
        }
        (_, Some(n)) => format!("robot moving it to drive {n}"),
        (_, None) => "robot moving".to_owned(),
    })
}

/// What `rsm mount` mounts: a cartridge, where, and the pool to allocate it into first.
struct MountTarget<'a> {
    barcode: &'a str,
    drive: Option<&'a str>,
    pool: Option<&'a str>,
}

fn mount(
    session: &Session,
    json: bool,
    target: MountTarget<'_>,
    timeout: Option<u64>,
    flags: MountFlags,
    priority: i32,
) -> Result<(), Failure> {
    let barcode = target.barcode;
    let media = session.resolve_media(barcode)?;
    let drive = target.drive.map(|d| session.resolve_drive(d)).transpose()?;
    let timeout = timeout.map(Duration::from_secs);
    let call = || session.mount_in_pool(&[media.as_str()], drive.as_deref(), flags, priority, timeout, target.pool);
    if flags.nowait {
        let reply = call()?;
        return if json {
            print_json(&reply)
        } else {
            out(&format!("Mount of {media} queued as request {}\n", reply.request))
        };
    }
    // On a terminal, say what is happening while the robot and the drive work (nothing extra when piped).
    let done = Arc::new(AtomicBool::new(false));
    if !json && std::io::stderr().is_terminal() {
        if let Ok(id) = session.get_object_information(&media).map(|o| o.id) {
            // Subscribed before the mount is sent, so that no stage is missed.
            let subscribed = progress(session.socket().to_owned(), barcode.to_owned(), id, done.clone());
            let _ = subscribed.recv_timeout(Duration::from_secs(2));
        }
    }
    let (result, interrupted) = wait_for(session, &format!("mount of {media}"), call);
    done.store(true, Ordering::SeqCst);
    match (result, interrupted) {
        (Ok(reply), None) => {
            if json {
                return print_json(&reply);
            }
            let mut text = format!(
                "{media} mounted in {}: {}\n",
                drive_text(session, &reply),
                reply.device.as_deref().unwrap_or("(no device node on the library's host)")
            );
            if let (Some(_), Some(host)) = (session.remote(), &reply.host) {
                // The nodes are the library host's, not this one's: say where to open them.
                text.push_str(&format!("  on host {host}\n"));
            }
            if let Some(d) = &reply.devices {
                text.push_str(&format!(
                    "  sg {}  nst {}\n",
                    d.sg.as_deref().unwrap_or("-"),
                    d.nst.as_deref().unwrap_or("-")
                ));
            }
            out(&text)
        }
        (Err(e), None) => Err(e.into()),
        (Ok(reply), Some(signal)) => Err(Failure::Interrupted {
            signal,
            message: format!(
                "the mount of {media} completed before it could be cancelled: it stays in {} \
                 (rsm dismount {media})",
                drive_text(session, &reply)
            ),
        }),
        (Err(NtmsError::Cancelled { .. }), Some(signal)) => {
            Err(Failure::Interrupted { signal, message: format!("the mount of {media} is cancelled") })
        }
        (Err(e), Some(signal)) => Err(Failure::Interrupted {
            signal,
            message: format!("the mount of {media} ended: {}", rsmd::error_chain(&e)),
        }),
    }
}

fn dismount(
    session: &Session,
    json: bool,
    barcode: Option<&str>,
    drive: Option<&str>,
    deferred: bool,
) -> Result<(), Failure> {
    let (target, what) = match (barcode, drive) {
        (Some(b), _) => {
            let media = session.resolve_media(b)?;
            (DismountTarget::Media(media.clone()), media)
        }
        (None, Some(d)) => (DismountTarget::Drive(session.resolve_drive(d)?), format!("drive {d}")),
        (None, None) => return Err(Failure::Usage("give a barcode or --drive".into())),
    };
    let result = json!({
        "media": match &target { DismountTarget::Media(m) => Some(m.clone()), DismountTarget::Drive(_) => None },
        "drive": match &target { DismountTarget::Drive(d) => Some(d.clone()), DismountTarget::Media(_) => None },
        "deferred": deferred,
    });
    let call = || session.dismount(target.clone(), deferred);
    let (outcome, interrupted) =
        if deferred { (call(), None) } else { wait_for(session, &format!("dismount of {what}"), call) };
    match (outcome, interrupted) {
        (Ok(()), None) if json => print_json(&result),
        (Ok(()), None) if deferred => {
            out(&format!("{what} is dismounted after the library's deferred-dismount delay\n"))
        }
        (Ok(()), None) => out(&format!("{what} dismounted\n")),
        (Err(e), None) => Err(e.into()),
        (Ok(()), Some(signal)) => Err(Failure::Interrupted {
            signal,
            message: format!("the dismount of {what} completed before it could be cancelled"),
        }),
        (Err(NtmsError::Cancelled { .. }), Some(signal)) => Err(Failure::Interrupted {
            signal,
            message: format!("the dismount of {what} is cancelled: the cartridge stays mounted"),
        }),
        (Err(e), Some(signal)) => Err(Failure::Interrupted {
            signal,
            message: format!("the dismount of {what} ended: {}", rsmd::error_chain(&e)),
        }),
    }
}

/// `rsm watch`: subscribes first, then learns the names, so no change between the two is missed.
fn watch(session: &Session, json: bool, object_type: Option<ObjectType>) -> Result<(), Failure> {
    let changes = session.notifications(object_type)?;
    let mut names = names(session)?;
    // On standard error, so people (and tests) know the subscription is in place; standard output has only
    // the changes.
    eprintln!("rsm: watching rsmd at {} (Ctrl-C to stop)", session.socket().display());
    for change in changes {
        let change = change?;
        let object = match session.get_object_information(&change.object) {
            Ok(o) => Some(o),
            Err(NtmsError::ObjectNotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        if let Some(o) = &object {
            names.add(o);
        }
        let line = if json {
            let value = json!({
                "operation": change.operation,
                "object_type": change.object_type,
                "object": change.object,
                "label": names.label(&change.object),
                "info": object,
            });
            serde_json::to_string(&value)
                .map_err(|e| NtmsError::Internal { message: format!("cannot print JSON: {e}") })?
        } else {
            format::change_line(&change, object.as_ref(), &names)
        };
        out(&format!("{line}\n"))?;
    }
    Err(NtmsError::NotConnected { message: format!("rsmd at {} ended the notifications", session.socket().display()) }
        .into())
}

/// `rsm version`: works without a session (a daemon still loading answers `GetInfo`).
fn version(cli: &Cli, opts: &SessionOptions, timeouts: Timeouts) -> Result<(), Failure> {
    let client = json!({"version": env!("CARGO_PKG_VERSION"), "protocol": PROTOCOL_VERSION});
    if !cli.json {
        out(&format!("rsm {} (protocol {PROTOCOL_VERSION})\n", env!("CARGO_PKG_VERSION")))?;
    }
    let host = cli.host.as_deref().filter(|h| !rsmd::client::remote::is_local(h) && rsmd::client::remote::is_host(h));
    let mut conn = match host {
        Some(h) => Connection::connect_remote(h, timeouts)?,
        None => Connection::open_with(cli.socket.as_deref(), timeouts)?,
    };
    let info = conn.get_info()?;
    let socket = conn.path().to_owned();
    drop(conn);
    let (libraries, protocol, loading) = match Session::open_with_timeouts(opts, timeouts, host, Some("rsm"), 0) {
        Ok(s) => {
            let libs = s.enumerate(None, ObjectType::Library)?;
            let protocol = s.protocol_version();
            s.close()?;
            (libs, Some(protocol), false)
        }
        Err(NtmsError::NotReady { .. }) => (Vec::new(), None, true),
        Err(e) => return Err(e.into()),
    };
    if cli.json {
        let libs: Vec<Value> = libraries
            .iter()
            .map(|l| json!({"id": l.id, "name": l.name, "state": l.state, "enabled": l.enabled, "description": l.description}))
            .collect();
        return print_json(&json!({
            "client": client,
            "daemon": {
                "socket": socket,
                "vendor": info.vendor,
                "product": info.product,
                "version": info.version,
                "url": info.url,
                "interfaces": info.interfaces,
                "protocol": protocol,
                "loading": loading,
            },
            "libraries": libs,
        }));
    }
    let mut text = format!(
        "rsmd {} at {} (protocol {})\ninterfaces: {}\n",
        info.version,
        socket.display(),
        protocol.map_or_else(|| "?".into(), |p| p.to_string()),
        info.interfaces.join(", ")
    );
    if loading {
        text.push_str("rsmd is still loading its inventory\n");
    } else if libraries.is_empty() {
        text.push_str("No libraries.\n");
    }
    for l in &libraries {
        text.push_str(&format!("library {}: {}", l.name, l.state));
        if !l.description.is_empty() {
            text.push_str(&format!(" ({})", l.description));
        }
        if !l.enabled {
            text.push_str(", disabled");
        }
        text.push('\n');
    }
    out(&text)
}

fn run(cli: Cli) -> Result<(), Failure> {
    let opts = SessionOptions {
        socket: cli.socket.clone(),
        wait_ready: (cli.wait > 0).then(|| Duration::from_secs(cli.wait)),
    };
    let timeouts =
        Timeouts { connect: Duration::from_secs(cli.reply_timeout), reply: Duration::from_secs(cli.reply_timeout) };
    if let Command::Version = cli.command {
        return version(&cli, &opts, timeouts);
    }
    if cli.json && matches!(cli.command, Command::Completions { .. } | Command::Man) {
        return Err(Failure::Usage("completions and man print scripts and pages, not JSON: leave out --json".into()));
    }
    if let Command::Completions { shell } = cli.command {
        use clap::CommandFactory;
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "rsm", &mut out);
        return write_all(&out);
    }
    if let Command::Man = cli.command {
        use clap::CommandFactory;
        let mut out = Vec::new();
        clap_mangen::Man::new(Cli::command()).section("1").render(&mut out).map_err(Failure::Output)?;
        return write_all(&out);
    }
    if let Command::Status { mtx: true } = cli.command {
        if cli.json {
            return Err(Failure::Usage("--mtx and --json exclude each other".into()));
        }
    }
    let session = Session::open_with_timeouts(&opts, timeouts, cli.host.as_deref(), Some(&cli.application), 0)?;
    let json = cli.json;
    match cli.command {
        Command::Status { mtx } => status(&session, json, mtx)?,
        Command::View { object_type, container } => {
            let objects = session.enumerate(container.as_deref(), object_type)?;
            if json {
                print_json(&objects)?;
            } else {
                out(&format::objects_table(&objects, &names(&session)?))?;
            }
        }
        Command::Info { id } => {
            let object = match session.get_object_information(&id) {
                // A barcode in another case.
                Err(NtmsError::ObjectNotFound { .. }) => match session.resolve_media(&id)? {
                    exact if exact != id => session.get_object_information(&exact)?,
                    _ => session.get_object_information(&id)?,
                },
                other => other?,
            };
            if json {
                print_json(&object)?;
            } else {
                out(&format::object_info(&object, &names(&session)?))?;
            }
        }
        Command::Mount { barcode, drive, timeout, write, nowait, error_if_unavailable, priority, pool } => {
            let flags = MountFlags { read: !write, write, nowait, error_if_unavailable, ..MountFlags::default() };
            let target = MountTarget { barcode: &barcode, drive: drive.as_deref(), pool: pool.as_deref() };
            mount(&session, json, target, timeout, flags, priority)?;
        }
        Command::Dismount { barcode, drive, deferred } => {
            dismount(&session, json, barcode.as_deref(), drive.as_deref(), deferred)?;
        }
        Command::Requests => {
            let requests = session.requests()?;
            if json {
                print_json(&requests)?;
            } else {
                out(&format::requests_table(&requests, &names(&session)?))?;
            }
        }
        Command::Cancel { id } if id.parse::<u64>().is_ok() => {
            session.cancel_operator(&id)?;
            if json {
                print_json(&json!({ "cancelled": id }))?;
            } else {
                out(&format!("Operator request {id} withdrawn\n"))?;
            }
        }
        Command::Cancel { id } => {
            session.cancel_request(&id)?;
            if json {
                print_json(&json!({ "cancelled": id }))?;
            } else {
                out(&format!("Request {id} cancelled\n"))?;
            }
        }
        Command::Reorder { id, priority } => {
            session.set_request_priority(&id, priority)?;
            if json {
                print_json(&json!({ "request": id, "priority": priority }))?;
            } else {
                out(&format!("Request {id} now has priority {priority}\n"))?;
            }
        }
        Command::Inventory { library, mode, fast, full, label, nowait } => {
            let mode = match (fast, full, label) {
                (true, _, _) => ModeArg::Fast,
                (_, true, _) => ModeArg::Full,
                (_, _, true) => ModeArg::Label,
                _ => mode,
            };
            inventory(&session, json, library.as_deref(), mode.into(), nowait)?;
        }
        Command::Watch { object_type } => watch(&session, json, object_type)?,
        Command::Version
        | Command::Completions { .. }
        | Command::Man
        | Command::Mtx { .. }
        | Command::Bridge
        | Command::Changer { .. } => {
            unreachable!("handled before the session")
        }
        Command::Pools => {
            let pools = session.enumerate(None, ObjectType::MediaPool)?;
            if json {
                print_json(&pools)?;
            } else {
                out(&format::pools_table(&pools))?;
            }
        }
        Command::Pool { action } => pool_command(&session, json, action)?,
        Command::Media { pool } => {
            let pool_id = match pool.as_deref() {
                Some(p) => Some(pool_id(&session, p)?),
                None => None,
            };
            let media = session.enumerate(pool_id.as_deref(), ObjectType::PhysicalMedia)?;
            if json {
                print_json(&media)?;
            } else {
                out(&format::media_table(&media, &names(&session)?))?;
            }
        }
        Command::Allocate { pool, barcode, error_if_unavailable, timeout } => {
            let media = barcode.as_deref().map(|b| session.resolve_media(b)).transpose()?;
            let r =
                session.allocate(&pool, media.as_deref(), error_if_unavailable, timeout.map(Duration::from_secs))?;
            if json {
                print_json(&r)?;
            } else {
                out(&format!(
                    "Allocated {} in {pool} for {}: logical media {}\n",
                    r.barcode.as_deref().unwrap_or(&r.media),
                    cli.application,
                    r.logical_media
                ))?;
            }
        }
        Command::Deallocate { media } => {
            let m = session.resolve_media(&media)?;
            session.deallocate(&m)?;
            done_line(json, "deallocated", &media)?;
        }
        Command::Complete { media } => {
            let m = session.resolve_media(&media)?;
            session.set_complete(&m)?;
            done_line(json, "complete", &media)?;
        }
        Command::Swap { first, second } => {
            let (a, b) = (session.resolve_media(&first)?, session.resolve_media(&second)?);
            session.swap(&a, &b)?;
            if json {
                print_json(&json!({ "swapped": [first, second] }))?;
            } else {
                out(&format!("Swapped the cartridges of {first} and {second}\n"))?;
            }
        }
        Command::Decommission { barcode } => {
            session.decommission(&session.resolve_media(&barcode)?)?;
            done_line(json, "decommissioned", &barcode)?;
        }
        Command::Eject { barcodes, error_if_full } => {
            let ids = barcodes.iter().map(|b| session.resolve_media(b)).collect::<Result<Vec<String>, _>>()?;
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            let request = session.eject_many(&ids, error_if_full)?;
            if json {
                let ejected = if barcodes.len() == 1 { json!(barcodes[0]) } else { json!(barcodes) };
                print_json(&json!({ "ejected": ejected, "request": request }))?;
            } else {
                let what = barcodes.join(", ");
                let verb = if barcodes.len() == 1 { "is" } else { "are" };
                out(&format!("{what} {verb} in the mail slots (request {request})\n"))?;
            }
        }
        Command::Clean { drive } => {
            let id = session.resolve_drive(&drive)?;
            let request = session.clean_drive(&id)?;
            if json {
                print_json(&json!({ "cleaned": drive, "request": request }))?;
            } else {
                out(&format!("Drive {drive} is clean (request {request})\n"))?;
            }
        }
        Command::Operator { all } => {
            let mut requests = session.enumerate(None, ObjectType::OpRequest)?;
            if !all {
                requests.retain(|o| o.state == "active");
            }
            if json {
                print_json(&requests)?;
            } else {
                out(&format::operator_table(&requests, &names(&session)?))?;
            }
        }
        Command::Satisfy { id } => {
            session.satisfy_operator(&id)?;
            done_line(json, "satisfied", &id)?;
        }
        Command::Refuse { id, reason } => {
            session.refuse_operator(&id, reason.as_deref())?;
            done_line(json, "refused", &id)?;
        }
        Command::Submit { text, kind, object } => {
            let object = match object.as_deref() {
                Some(o) => Some(object_id(&session, o)?),
                None => None,
            };
            let (id, number) = session.submit_operator(kind.into(), &text, object.as_deref())?;
            if json {
                print_json(&json!({ "request": id, "number": number }))?;
            } else {
                out(&format!("Operator request {number} submitted ({id})\n"))?;
            }
        }
        Command::WaitOperator { id, timeout } => {
            session.wait_operator(&id, timeout.map(Duration::from_secs))?;
            done_line(json, "satisfied", &id)?;
        }
        Command::Door { library, full } => {
            let lib = one_library(&session, library.as_deref())?;
            let mode = if full { InventoryMode::Full } else { InventoryMode::Fast };
            let request = session.access_door(&lib.id, mode)?;
            if json {
                print_json(&json!({ "unlocked": lib.name, "request": request }))?;
            } else {
                out(&format!(
                    "The door of {} is unlocked: open it; robot work waits until it is closed (request {request})\n",
                    lib.name
                ))?;
            }
        }
        Command::Inject { library } => {
            let lib = one_library(&session, library.as_deref())?;
            let request = session.inject(&lib.id)?;
            if json {
                print_json(&json!({ "injected": lib.name, "request": request }))?;
            } else {
                out(&format!("The mail slots of {} are in storage (request {request})\n", lib.name))?;
            }
        }
        Command::DeleteMedia { barcode } => {
            session.delete_media(&session.resolve_media(&barcode)?)?;
            done_line(json, "deleted", &barcode)?;
        }
        Command::Enable { object } => {
            let id = object_id(&session, &object)?;
            session.set_enabled(&id, true)?;
            done_line(json, "enabled", &object)?;
        }
        Command::Disable { object } => {
            let enable = false;
            let id = object_id(&session, &object)?;
            session.set_enabled(&id, enable)?;
            done_line(json, if enable { "enabled" } else { "disabled" }, &object)?;
        }
    }
    session.close()?;
    Ok(())
}

/// `{"<what>": "<object>"}` or `<Object> <what>`.
fn done_line(json: bool, what: &str, object: &str) -> Result<(), Failure> {
    if json {
        print_json(&json!({ what: object }))
    } else {
        out(&format!("{object} {what}\n"))
    }
}

/// The library named (id or name), or the only one.
fn one_library(session: &Session, library: Option<&str>) -> Result<ObjectInfo, Failure> {
    let libraries = session.enumerate(None, ObjectType::Library)?;
    let mut chosen: Vec<ObjectInfo> = libraries
        .into_iter()
        .filter(|l| library.is_none_or(|want| l.id == want || l.name == want))
        .filter(|l| l.state != "not_present")
        .collect();
    match chosen.len() {
        1 => Ok(chosen.remove(0)),
        0 => Err(NtmsError::InvalidLibrary { message: "no such library".into() }.into()),
        _ => Err(Failure::Usage("several libraries: name one".into())),
    }
}

/// A pool's id from its path (in any case) or id.
fn pool_id(session: &Session, spec: &str) -> Result<String, Failure> {
    let pools = session.enumerate(None, ObjectType::MediaPool)?;
    let spec_path = spec.trim_start_matches('\\');
    pools.iter().find(|p| p.id == spec || p.name.eq_ignore_ascii_case(spec_path)).map(|p| p.id.clone()).ok_or_else(
        || Failure::Rsmd(NtmsError::InvalidMediaPool { message: format!("no pool {spec:?} (rsm pools lists them)") }),
    )
}

/// The id of what `enable`/`disable` name: a cartridge (barcode), a library (name or id), or a drive (number,
/// serial or id).
fn object_id(session: &Session, spec: &str) -> Result<String, Failure> {
    let libraries = session.enumerate(None, ObjectType::Library)?;
    if let Some(l) = libraries.iter().find(|l| l.id == spec || l.name.eq_ignore_ascii_case(spec)) {
        return Ok(l.id.clone());
    }
    match session.resolve_drive(spec) {
        Ok(d) => return Ok(d),
        Err(NtmsError::ObjectNotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(session.resolve_media(spec)?)
}

fn pool_command(session: &Session, json: bool, action: PoolCommand) -> Result<(), Failure> {
    use rsmd::proto::types::{ObjectChanges, PoolAction};
    match action {
        PoolCommand::Create { path, media_type, draw_from_free, return_to_free, max_allocations } => {
            let r = session.create_pool(&path, media_type.as_deref(), PoolAction::CreateNew)?;
            let changes = ObjectChanges {
                draw_from_free: draw_from_free.then_some(true),
                return_to_free: return_to_free.then_some(true),
                max_allocations,
                ..ObjectChanges::default()
            };
            if changes != ObjectChanges::default() {
                session.set_object_information(&r.pool, None, changes)?;
            }
            if json {
                print_json(&r)
            } else {
                out(&format!("Pool {path} created ({})\n", r.pool))
            }
        }
        PoolCommand::Delete { pool } => {
            let id = pool_id(session, &pool)?;
            session.delete_pool(&id)?;
            done_line(json, "deleted", &pool)
        }
        PoolCommand::Move { barcode, pool } => {
            let m = session.resolve_media(&barcode)?;
            let id = pool_id(session, &pool)?;
            session.move_to_pool(&m, &id)?;
            if json {
                print_json(&json!({ "moved": barcode, "pool": pool }))
            } else {
                out(&format!("{barcode} moved to {pool}\n"))
            }
        }
        PoolCommand::Set { pool, draw_from_free, return_to_free, max_allocations, description, name, version } => {
            let id = pool_id(session, &pool)?;
            let changes =
                ObjectChanges { draw_from_free, return_to_free, max_allocations, description, name, media_type: None };
            if changes == ObjectChanges::default() {
                return Err(Failure::Usage(
                    "nothing to change: give --draw-from-free, --return-to-free, \
                                           --max-allocations, --description or --name"
                        .into(),
                ));
            }
            let o = session.set_object_information(&id, version, changes)?;
            if json {
                print_json(&o)
            } else {
                out(&format!("Pool {} changed (version {})\n", o.name, o.version.unwrap_or(0)))
            }
        }
    }
}

/// Parses the command line; with `--json`, a usage error is a JSON error too (exit status 2).
fn parse() -> Result<Cli, ExitCode> {
    match Cli::try_parse() {
        Ok(cli) => Ok(cli),
        Err(e) => {
            use clap::error::ErrorKind as K;
            let informational =
                matches!(e.kind(), K::DisplayHelp | K::DisplayVersion | K::DisplayHelpOnMissingArgumentOrSubcommand);
            if !informational && std::env::args_os().any(|a| a == "--json") {
                // clap's message is its first paragraph (the rest is the usage line and a hint).
                let text = e.to_string();
                let message: Vec<&str> = text.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
                let failure = Failure::Usage(message.join(" ").trim_start_matches("error: ").to_owned());
                let _ = out(&format!("{}\n", serde_json::to_string_pretty(&failure.to_json()).unwrap_or_default()));
                return Err(ExitCode::from(failure.exit_status()));
            }
            // clap prints help and version to stdout: a closed pipe must not make that panic either.
            let _ = e.print();
            Err(ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2)))
        }
    }
}

fn main() -> ExitCode {
    // Installed under mtx's or mtx-changer's name (a link to rsm): their command lines as they are.
    let argv0 = std::env::args().next().unwrap_or_default();
    let called = std::path::Path::new(&argv0).file_name().and_then(|n| n.to_str()).unwrap_or("").to_owned();
    let kind = match called.as_str() {
        "mtx" => Some(Front::Mtx),
        "mtx-changer" => Some(Front::Changer),
        _ => None,
    };
    if let Some(kind) = kind {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let opts = SessionOptions { socket: None, wait_ready: Some(Duration::from_secs(30)) };
        let timeouts = Timeouts { connect: Duration::from_secs(10), reply: Duration::from_secs(10) };
        // The application a partition binds (rsm's --application), for programs that cannot pass an option.
        let application = std::env::var("RSM_APPLICATION").unwrap_or_else(|_| "rsm".to_owned());
        // The rsmd of another host for programs that cannot pass an option ($RSM_HOST, as rsm's --host).
        let host = std::env::var("RSM_HOST").ok().filter(|h| !h.is_empty());
        return front(kind, &args, &opts, timeouts, &application, host.as_deref());
    }
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    if let Command::Mtx { args } | Command::Changer { args } = &cli.command {
        let kind = if matches!(cli.command, Command::Mtx { .. }) { Front::Mtx } else { Front::Changer };
        let opts = SessionOptions {
            socket: cli.socket.clone(),
            wait_ready: (cli.wait > 0).then(|| Duration::from_secs(cli.wait)),
        };
        let timeouts =
            Timeouts { connect: Duration::from_secs(cli.reply_timeout), reply: Duration::from_secs(cli.reply_timeout) };
        return front(kind, args, &opts, timeouts, &cli.application, cli.host.as_deref());
    }
    if let Command::Bridge = cli.command {
        let location = rsmd::client::locate::SocketSearch::from_env(cli.socket.as_deref()).locate();
        let code = rsmd::client::remote::bridge(&location.path);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let json = cli.json;
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            match &failure {
                Failure::OutputClosed => {}
                // Output itself failed: only standard error is left.
                Failure::Output(_) => eprintln!("{}", failure.text()),
                _ if json => {
                    let text = serde_json::to_string_pretty(&failure.to_json()).unwrap_or_default();
                    if let Err(Failure::Output(_)) = out(&format!("{text}\n")) {
                        eprintln!("{}", failure.text());
                    }
                }
                _ => eprintln!("{}", failure.text()),
            }
            ExitCode::from(failure.exit_status())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn object_type_names() {
        assert_eq!(parse_object_type("storage_slot"), Ok(ObjectType::StorageSlot));
        assert_eq!(parse_object_type("storageslot"), Ok(ObjectType::StorageSlot));
        assert_eq!(parse_object_type("opreq"), Ok(ObjectType::OpRequest));
        assert_eq!(parse_object_type("request"), Ok(ObjectType::LibRequest));
        assert_eq!(parse_object_type("Physical_Media"), Ok(ObjectType::PhysicalMedia));
        assert_eq!(parse_object_type("ie-port"), Ok(ObjectType::IePort));
        assert!(parse_object_type("toaster").unwrap_err().contains("storage_slot"));
    }

    #[test]
    fn dismount_needs_exactly_one_target() {
        assert!(Cli::try_parse_from(["rsm", "dismount"]).is_err());
        assert!(Cli::try_parse_from(["rsm", "dismount", "ABC001L6", "--drive", "0"]).is_err());
        assert!(Cli::try_parse_from(["rsm", "dismount", "--drive", "0", "--deferred"]).is_ok());
        let cli = Cli::try_parse_from(["rsm", "mount", "A", "--priority", "-3", "--socket", "/s"]).unwrap();
        assert_eq!(cli.socket, Some(PathBuf::from("/s")));
        assert!(matches!(cli.command, Command::Mount { priority: -3, .. }));
    }

    #[test]
    fn exit_statuses_are_the_documented_ones() {
        let m = String::new;
        let cases = [
            (NtmsError::InvalidParameter { message: m() }, 2),
            (NtmsError::NotConnected { message: m() }, 3),
            (NtmsError::ObjectNotFound { message: m() }, 4),
            (NtmsError::InvalidLibrary { message: m() }, 4),
            (NtmsError::AccessDenied { message: m() }, 5),
            (NtmsError::Timeout { message: m() }, 6),
            (NtmsError::MediaUnavailable { message: m() }, 6),
            (NtmsError::NotReady { message: m() }, 6),
            (NtmsError::UnableToLoadMedium { message: m() }, 1),
            (NtmsError::Cancelled { message: m() }, 1),
        ];
        for (e, status) in cases {
            assert_eq!(exit_status(&e), status, "{e:?}");
            assert!(EXIT_STATUS.contains(&format!("\n  {status} ")), "{status} is documented");
        }
        let i = Failure::Interrupted { signal: Signal::SIGINT, message: m() };
        assert_eq!(i.exit_status(), 130);
        assert_eq!(Failure::Interrupted { signal: Signal::SIGTERM, message: m() }.exit_status(), 143);
        assert_eq!(Failure::Usage(m()).exit_status(), 2);
        assert_eq!(i.to_json()["error"]["name"], "Interrupted");
    }
}
