//! `rsm`: the command-line client of rsmd, modelled on rsm.exe and mtx.
//!
//! `rsm status --mtx` prints exactly what `mtx status` prints, so existing scripts can parse it; the other
//! commands print readable tables, or the objects as JSON with `--json`. Errors are printed once, as
//! `rsm: <message>: <Name> (<code>)`, and the exit status is 1.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use rsmd::client::{format, Session, SessionOptions};
use rsmd::proto::types::{InventoryMode, MountFlags};
use rsmd::proto::{DismountTarget, NtmsError, ObjectDetails, ObjectInfo, ObjectType};

/// Command-line client for rsmd, the Removable Storage Manager.
#[derive(Debug, Parser)]
#[command(name = "rsm", version)]
struct Cli {
    /// rsmd's socket [default: $RSMD_SOCKET, else /run/rsmd/rsmd.sock]
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Print objects and replies as JSON
    #[arg(long, global = true)]
    json: bool,
    /// Wait up to this many seconds for rsmd to start and finish loading
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 0)]
    wait: u64,
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
    /// Show one object by id (or a cartridge by barcode)
    Info {
        /// Object id or barcode
        id: String,
    },
    /// Mount a cartridge and wait until the drive is ready
    Mount {
        /// Barcode (or media id)
        barcode: String,
        /// Drive number (from 0, as mtx counts) or drive id
        #[arg(long, value_name = "N|ID")]
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
    },
    /// Dismount a cartridge, or whatever a drive holds
    #[command(group(ArgGroup::new("what").required(true).args(["barcode", "drive"])))]
    Dismount {
        /// Barcode (or media id)
        barcode: Option<String>,
        /// Drive number or id
        #[arg(long, value_name = "N|ID")]
        drive: Option<String>,
        /// Leave the cartridge loaded for the library's deferred-dismount delay
        #[arg(long)]
        deferred: bool,
    },
    /// List library requests
    Requests,
    /// Cancel a library request
    Cancel {
        /// Request id
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
    /// Mount each cartridge and read its label
    Omid,
}

impl From<ModeArg> for InventoryMode {
    fn from(m: ModeArg) -> InventoryMode {
        match m {
            ModeArg::Default => InventoryMode::Default,
            ModeArg::Fast => InventoryMode::Fast,
            ModeArg::Full => InventoryMode::Full,
            ModeArg::Omid => InventoryMode::Omid,
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

fn print_json(value: &impl Serialize) -> Result<(), NtmsError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| NtmsError::Internal { message: format!("cannot print JSON: {e}") })?;
    println!("{text}");
    Ok(())
}

fn status(session: &Session, json: bool, mtx: bool) -> Result<(), NtmsError> {
    if json && mtx {
        return Err(NtmsError::InvalidParameter { message: "--mtx and --json exclude each other".into() });
    }
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
            return Err(NtmsError::ObjectNotFound { message: "rsmd manages no library".into() });
        }
        print!("{text}");
    } else {
        print!("{}", format::status_table(&objects));
    }
    Ok(())
}

fn inventory(session: &Session, json: bool, library: Option<&str>, mode: InventoryMode) -> Result<(), NtmsError> {
    let libraries = session.enumerate(None, ObjectType::Library)?;
    let chosen: Vec<&ObjectInfo> = match library {
        Some(want) => {
            let found: Vec<&ObjectInfo> = libraries.iter().filter(|l| l.id == want).collect();
            let found = if found.is_empty() { libraries.iter().filter(|l| l.name == want).collect() } else { found };
            match found.len() {
                0 => return Err(NtmsError::InvalidLibrary { message: format!("no library '{want}'") }),
                1 => found,
                _ => {
                    return Err(NtmsError::InvalidParameter {
                        message: format!("several libraries are named '{want}'; give the id"),
                    })
                }
            }
        }
        None => libraries.iter().filter(|l| matches!(l.details, ObjectDetails::Library(_))).collect(),
    };
    let mut requests = Vec::new();
    for lib in chosen {
        let request = session.inventory(&lib.id, mode)?;
        if !json {
            println!("Inventory of {} queued as request {request}", lib.name);
        }
        requests.push(serde_json::json!({"library": lib.id, "request": request}));
    }
    if json {
        print_json(&requests)?;
    }
    Ok(())
}

fn run(cli: Cli) -> Result<(), NtmsError> {
    let opts = SessionOptions {
        socket: cli.socket.clone(),
        wait_ready: (cli.wait > 0).then(|| Duration::from_secs(cli.wait)),
    };
    let session = Session::open_with(&opts, None, Some("rsm"), 0)?;
    let json = cli.json;
    match cli.command {
        Command::Status { mtx } => status(&session, json, mtx)?,
        Command::View { object_type, container } => {
            let objects = session.enumerate(container.as_deref(), object_type)?;
            if json {
                print_json(&objects)?;
            } else {
                print!("{}", format::objects_table(&objects));
            }
        }
        Command::Info { id } => {
            let object = session.get_object_information(&id)?;
            if json {
                print_json(&object)?;
            } else {
                print!("{}", format::object_info(&object));
            }
        }
        Command::Mount { barcode, drive, timeout, write, nowait, error_if_unavailable, priority } => {
            let drive = drive.map(|d| session.resolve_drive(&d)).transpose()?;
            let flags = MountFlags { read: !write, write, nowait, error_if_unavailable, ..MountFlags::default() };
            let reply = session.mount(
                &[barcode.as_str()],
                drive.as_deref(),
                flags,
                priority,
                timeout.map(Duration::from_secs),
            )?;
            if json {
                print_json(&reply)?;
            } else if nowait {
                println!("Mount of {barcode} queued as request {}", reply.request);
            } else {
                // Name the drive as people and mtx count it, with its serial; the id is for scripts.
                let id = reply.drive.as_deref().unwrap_or("-");
                let drive = reply.drive.as_deref().and_then(|d| session.get_object_information(d).ok());
                let name = match drive.as_ref().map(|o| &o.details) {
                    Some(ObjectDetails::Drive(dd)) => {
                        format!("drive {} ({}, id {id})", dd.number, dd.serial.as_deref().unwrap_or("no serial"))
                    }
                    _ => format!("drive {id}"),
                };
                println!(
                    "{barcode} mounted in {name}: {}",
                    reply.device.as_deref().unwrap_or("(no device node on this host)")
                );
                if let Some(d) = &reply.devices {
                    println!("  sg {}  nst {}", d.sg.as_deref().unwrap_or("-"), d.nst.as_deref().unwrap_or("-"));
                }
            }
        }
        Command::Dismount { barcode, drive, deferred } => {
            let target = match (barcode, drive) {
                (Some(b), _) => DismountTarget::Media(b),
                (None, Some(d)) => DismountTarget::Drive(session.resolve_drive(&d)?),
                (None, None) => {
                    return Err(NtmsError::InvalidParameter { message: "give a barcode or --drive".into() })
                }
            };
            session.dismount(target, deferred)?;
        }
        Command::Requests => {
            let requests = session.requests()?;
            if json {
                print_json(&requests)?;
            } else {
                print!("{}", format::requests_table(&requests));
            }
        }
        Command::Cancel { id } => session.cancel_request(&id)?,
        Command::Reorder { id, priority } => session.set_request_priority(&id, priority)?,
        Command::Inventory { library, mode } => inventory(&session, json, library.as_deref(), mode.into())?,
    }
    session.close()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rsm: {}", rsmd::error_chain(&e));
            ExitCode::FAILURE
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
}
