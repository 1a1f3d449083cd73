//! `rsmd`: the Removable Storage Manager daemon.
//!
//! `rsmd --demo` serves an embedded virtual library without hardware or root; `rsmd [--config FILE]` serves the
//! configured (or discovered) libraries; `rsmd --list-devices` and `rsmd --map-drives` are one-shot tools for
//! administrators. Errors are printed once, with their chain, and the exit status is 1.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// jemalloc, with its background threads giving freed memory back to the system after a few seconds. glibc's
/// allocator keeps what it freed between live allocations for the process's life: a daemon that built a 50,000-
/// cartridge database at first start stayed at 106-120 MiB, and after 50,000 `MoveToMediaPool` calls at 141-563 MiB
/// (sled's memory, freed when the writer reopens the database, but kept by glibc); with jemalloc 86 and 72 MiB,
/// measured ten seconds later. A restart measured the same with both (56-58 MiB).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Removable Storage Manager daemon: brokers tape libraries to many applications.
#[derive(Debug, Parser)]
#[command(name = "rsmd", version)]
struct Cli {
    /// Serve an embedded virtual library (vlib's default: 20 slots, 2 mail slots, 4 drives); state and socket go
    /// under $XDG_RUNTIME_DIR/rsmd-demo, else /tmp/rsmd-demo-UID (a private directory: created 0700, refused when
    /// another user owns it or others may write in it), where rsm finds the socket by itself, unless
    /// --socket/--state-dir say otherwise
    #[arg(long)]
    demo: bool,
    /// Configuration file [default: /etc/rsmd/rsmd.toml when it exists]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen on this socket (overrides the configuration; systemd socket activation overrides both)
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Keep the inventory database here (overrides the configuration)
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Print the changers and tape drives found (serials, element mapping, device nodes) and exit
    #[arg(long)]
    list_devices: bool,
    /// Discover which drive sits in which drive element by moving a cartridge through each, persist the mapping
    /// in the state directory, print it and exit
    #[arg(long)]
    map_drives: bool,
    /// With --map-drives: the changer to map (default: every changer found)
    #[arg(long, value_name = "DEVICE", requires = "map_drives")]
    changer: Option<PathBuf>,
    /// With --list-devices / --map-drives: print JSON
    #[arg(long)]
    json: bool,
    /// Root of sysfs (for tests)
    #[arg(long, value_name = "DIR", default_value = "/sys", hide = true)]
    sysfs_root: PathBuf,
    /// Root of /dev (for tests)
    #[arg(long, value_name = "DIR", default_value = "/dev", hide = true)]
    dev_root: PathBuf,
    /// More log output (-v debug, -vv trace)
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Write the database's records in DIR to standard output and exit (the daemon reads its database at start
    /// through this helper process: see `rsmd::store::load_through`)
    #[arg(long, value_name = "DIR", hide = true)]
    dump_store: Option<PathBuf>,
    /// Print the rsmd(8) manual page (roff) and exit
    #[arg(long)]
    man: bool,
    /// Print the rsmd.toml(5) manual page (roff), the reference of every configuration key, and exit
    #[arg(long)]
    man_config: bool,
}

/// rsmd(8), from the same definitions as `--help`.
fn man_page() -> std::io::Result<()> {
    use clap::CommandFactory;
    let cmd = Cli::command()
        .about("Removable Storage Manager daemon: brokers tape libraries to many applications")
        .after_help(
            "Configuration: /etc/rsmd/rsmd.toml (see rsmd.toml(5)). Clients: rsm(1) and the io.rsmd.Ntms Varlink \
         interface on the socket. systemd: rsmd.socket and rsmd.service (Type=notify; SIGHUP reloads).",
        );
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).section("8").render(&mut out)?;
    std::io::Write::write_all(&mut std::io::stdout(), &out)
}

fn print_chain(e: &dyn std::error::Error) {
    eprintln!("rsmd: {}", rsmd::error_chain(e));
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(dir) = &cli.dump_store {
        let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
        return match rsmd::store::Store::open(dir).and_then(|s| s.dump(&mut out)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                print_chain(&e);
                ExitCode::FAILURE
            }
        };
    }
    if cli.man || cli.man_config {
        let r = if cli.man {
            man_page()
        } else {
            let page = rsmd::config::reference::man_page(env!("CARGO_PKG_VERSION"));
            std::io::Write::write_all(&mut std::io::stdout(), page.as_bytes())
        };
        return match r {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rsmd: writing the manual page: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let level = match cli.verbose {
        0 => log::LevelFilter::Info,
        1 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    rsmd::server::notify::Logger::install(level);
    let config = match rsmd::server::start::load_config(cli.config.as_deref(), cli.demo) {
        Ok(c) => c,
        Err(e) => {
            print_chain(&e);
            return ExitCode::FAILURE;
        }
    };
    let state_dir = cli.state_dir.clone().unwrap_or_else(|| config.state_dir.clone());
    if cli.list_devices || cli.map_drives {
        let o = rsmd::devices::ListOptions {
            sysfs: cli.sysfs_root.clone(),
            dev: cli.dev_root.clone(),
            state_dir,
            json: cli.json,
        };
        let out = if cli.list_devices {
            rsmd::devices::list_devices(&o)
        } else {
            let vlib: Vec<PathBuf> = config
                .libraries
                .iter()
                .filter_map(|l| match &l.source {
                    rsmd::config::Source::Vlib(d) => Some(d.clone()),
                    _ => None,
                })
                .collect();
            rsmd::devices::map_drives(&o, cli.changer.as_deref(), &vlib)
        };
        return match out {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                print_chain(&e);
                ExitCode::FAILURE
            }
        };
    }
    let args = rsmd::server::start::DaemonArgs {
        config,
        demo: cli.demo,
        socket: cli.socket,
        state_dir: cli.state_dir,
        sysfs_root: cli.sysfs_root,
        dev_root: cli.dev_root,
        config_path: cli.config,
        // This very binary reads the database at start in a process of its own (its memory then goes with it).
        store_helper: Some(PathBuf::from("/proc/self/exe")),
    };
    match rsmd::server::start::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print_chain(&e);
            ExitCode::FAILURE
        }
    }
}
