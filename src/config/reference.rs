//! The reference of every configuration key: the one source of `rsmd.toml(5)` (`rsmd --man-config`), checked by a
//! test against the keys the parser accepts.

/// One key: (TOML path, value and default, what it does).
pub const KEYS: &[(&str, &str, &str)] = &[
    ("socket", "path; /run/rsmd/rsmd.sock", "Where clients connect. systemd socket activation overrides it."),
    (
        "socket_group",
        "group name or id; rsmd's group",
        "The group of a socket rsmd binds itself (without socket activation): its members are the clients.",
    ),
    ("socket_mode", "octal integer; 0o660", "The mode of a socket rsmd binds itself (connecting needs write)."),
    (
        "max_connections_per_user",
        "integer; 256",
        "Connections one user may have open at once, idle ones included; more are refused (Busy). Administrators are \
         exempt.",
    ),
    (
        "memory_budget_mib",
        "integer (MiB); 256",
        "What all connections together may hold in buffered calls and unsent replies. Beyond it, a connection that \
         holds more than 16 KiB (a client that pipelines calls and does not read its replies) is neither read nor \
         served until its client reads; the others go on.",
    ),
    ("state_dir", "path; /var/lib/rsmd", "The inventory database (sled) and the drive maps."),
    (
        "discover",
        "bool; true when no library is listed",
        "Also serve every medium changer found in sysfs (hot-plugged ones too).",
    ),
    (
        "administrators",
        "array of uids; [0]",
        "Users with every right: they dismount, cancel and reorder what others asked for, and manage every pool.",
    ),
    ("[[library]] name", "string; vendor and product", "The library's name for people and for [access] grants."),
    (
        "[[library]] changer",
        "\"auto\" | \"serial:SERIAL\" | device path; auto",
        "Which changer: the first one found, the one with this unit serial, or a /dev/sgN or /dev/tape/by-id path.",
    ),
    ("[[library]] vlib", "path", "A vlib emulator's listen directory instead of hardware."),
    ("[[library]] chunk", "1..=4096; 256", "Elements per READ ELEMENT STATUS."),
    ("[[library]] heartbeat_ms", "ms; 30000", "TEST UNIT READY on an idle changer: notices resets and door openings."),
    (
        "[[library]] ready_timeout_ms",
        "ms; 900000",
        "A drive not ready this long after a load fails the mount (raise it for LTO-9 media calibration).",
    ),
    (
        "[[library]] deferred_dismount_ms",
        "ms; 60000",
        "How long a deferred dismount leaves a cartridge loaded for a remount in place.",
    ),
    (
        "[[library]] auto_inject",
        "bool; false",
        "Inject the cartridges an operator puts in the mail slots at once (the library's IMPEXP flag), as InjectMedia.",
    ),
    (
        "[[library.partition]]",
        "name, application, slots = \"1-8,10\" or pool = \"Bacula\", drives = [0, 1], mail_slots = false",
        "The part of the library an application sees (rsmd:LIBRARY/NAME): its slots numbered 1..N, its drives from 0 \
         (a drive in several partitions is shared); its sessions mount nothing else. With pool instead of slots it \
         owns an application pool (created when missing): its slots are the home slots of the pool's cartridges, in \
         slot order, so cartridges moved into the pool (rsm pool move, [media.prefixes]) join it.",
    ),
    (
        "[library.drives]",
        "table: drive serial = element address",
        "The drive mapping for libraries that do not report drive serials (see rsmd --map-drives).",
    ),
    (
        "[media] new",
        "\"free\" | \"import\"; free",
        "Where a new cartridge of a known LTO type goes when no prefix matches.",
    ),
    (
        "[media] cleaner_uses",
        "integer; 50",
        "Cleanings a cleaning cartridge is good for: rsmd counts them and retires the cleaner after that many.",
    ),
    (
        "[media.prefixes]",
        "table: barcode prefix = \"cleaner\" | \"free\" | \"import\" | \"unrecognized\" | pool path",
        "Where new cartridges go by barcode; the longest matching prefix wins; a pool path is created when missing.",
    ),
    ("[access] admin_groups", "array of gids; []", "Groups whose processes have every right."),
    (
        "[access] library",
        "array of use, modify, control, all; [\"use\", \"control\"]",
        "What every local user has on libraries (mount and dismount; inventory).",
    ),
    (
        "[[access.grant]]",
        "pool = PATH | library = NAME | computer = true; uids, gids, everyone; rights",
        "More rights for users or groups on a pool (and the pools below it), a library (\"*\": all) or the computer.",
    ),
];

/// `rsmd.toml(5)` as roff.
pub fn man_page(version: &str) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace('-', "\\-");
    let mut out = format!(
        ".TH RSMD.TOML 5 \"\" \"rsmd {version}\" \"File Formats\"\n.SH NAME\nrsmd.toml \\- configuration of rsmd, the \
         Removable Storage Manager daemon\n.SH SYNOPSIS\n/etc/rsmd/rsmd.toml\n.SH DESCRIPTION\nTOML. Every key is \
         checked: an unknown key or a bad value stops rsmd with the file, the line and the key. With no file, rsmd \
         serves every changer it finds. SIGHUP reads the file again and applies it.\n.SH KEYS\n"
    );
    for (key, value, what) in KEYS {
        out.push_str(&format!(".TP\n.B {}\n{}\n.br\n{}\n", esc(key), esc(value), esc(what)));
    }
    out.push_str(".SH SEE ALSO\nrsmd(8), rsm(1)\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key the reference names is one the parser accepts (a file using them all parses), and every top-level
    /// key and table of the parser is in the reference.
    #[test]
    fn the_reference_names_the_keys_the_parser_accepts() {
        let every = "socket = \"/s\"\nsocket_group = 5\nsocket_mode = 0o600\nmax_connections_per_user = 9\nmemory_budget_mib = 64\nstate_dir = \"/d\"\ndiscover = true\n\
                     administrators = [0]\n[media]\nnew = \"free\"\ncleaner_uses = 9\n[media.prefixes]\nCLN = \"cleaner\"\n\
                     [access]\nadmin_groups = [1]\nlibrary = [\"use\"]\n[[access.grant]]\ncomputer = true\n\
                     everyone = true\nrights = [\"use\"]\n[[library]]\nname = \"a\"\nchanger = \"auto\"\nchunk = 8\n\
                     heartbeat_ms = 1000\nready_timeout_ms = 1000\ndeferred_dismount_ms = 0\n\
                     auto_inject = true\n\
                     [[library.partition]]\nname = \"p\"\napplication = \"A\"\nslots = \"1-2\"\ndrives = [0]\n\
                     mail_slots = true\n\
                     [library.drives]\n\"S\" = 1\n";
        crate::config::Config::parse(every).unwrap();
        for line in every.lines() {
            let key = line.split([' ', '=']).next().unwrap().trim_matches(|c| c == '[' || c == ']');
            if key.is_empty() || key.starts_with('"') || key == "CLN" {
                continue;
            }
            let leaf = key.rsplit('.').next().unwrap();
            assert!(
                KEYS.iter().any(|(k, v, _)| k.contains(leaf) || v.contains(leaf)),
                "{key} missing from the reference"
            );
        }
        let page = man_page("1");
        assert!(page.starts_with(".TH RSMD.TOML 5"));
        assert!(page.contains(".B [[access.grant]]") && page.contains("socket_mode"));
    }
}
