//! `vlib`: serve a virtual tape library on Unix sockets.
//!
//! `vlib --default --listen DIR` or `vlib --config FILE --listen DIR [--time-scale X]`.

use std::path::PathBuf;
use std::process::ExitCode;

use vlib::server::{control_path, Server};
use vlib::{Config, Device};

const USAGE: &str = "usage: vlib (--default | --config FILE) --listen DIR [--time-scale X]";

/// Parsed command line.
#[derive(Debug, Default)]
struct Args {
    default: bool,
    config: Option<PathBuf>,
    listen: Option<PathBuf>,
    time_scale: Option<f64>,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args::default();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--default" => a.default = true,
            "--config" => a.config = Some(PathBuf::from(value("--config")?)),
            "--listen" => a.listen = Some(PathBuf::from(value("--listen")?)),
            "--time-scale" => {
                let v = value("--time-scale")?;
                a.time_scale = Some(v.parse().map_err(|_| format!("bad --time-scale {v}"))?);
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.default == a.config.is_some() {
        return Err("exactly one of --default and --config is required".into());
    }
    if a.listen.is_none() {
        return Err("--listen DIR is required".into());
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("vlib: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut config = match &args.config {
        Some(path) => match Config::from_toml_file(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("vlib: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
        None => Config::default_library(),
    };
    if let Some(x) = args.time_scale {
        config.time_scale = x;
    }
    let listen = args.listen.unwrap_or_default();
    if let Err(e) = std::fs::create_dir_all(&listen) {
        eprintln!("vlib: {}: {e}", listen.display());
        return ExitCode::FAILURE;
    }
    let drives = config.drive_count();
    let server = match Server::spawn(config, &listen) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vlib: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", server.socket(Device::Changer).display());
    for i in 0..drives {
        println!("{}", server.socket(Device::Drive(i)).display());
    }
    println!("{}", control_path(server.dir()).display());
    // Serve until killed: SIGTERM/SIGINT terminate the process.
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        parse_args(s.split_whitespace().map(String::from))
    }

    #[test]
    fn command_line() {
        let a = args("--default --listen /tmp/x --time-scale 0").unwrap();
        assert!(a.default);
        assert_eq!(a.time_scale, Some(0.0));
        let a = args("--config lib.toml --listen d").unwrap();
        assert_eq!(a.config, Some(PathBuf::from("lib.toml")));
        assert!(args("--listen d").is_err());
        assert!(args("--default --config f --listen d").is_err());
        assert!(args("--default").is_err());
        assert!(args("--default --listen d --bogus").is_err());
        assert!(args("--default --listen d --time-scale x").is_err());
    }
}
