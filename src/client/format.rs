//! Pure text formatting of wire objects for `rsm`: mtx's `status` format, readable tables, object details.
//!
//! People read one numbering: mtx's, the `number` the daemon gives each element (drives from 0, storage slots
//! from 1, mail slots after the storage slots). Element addresses are a detail, shown beside the number. Ids that
//! objects refer to (a cartridge's home slot, pool and media type, a request's cartridge and drive) are shown as
//! what [`Names`] calls them: a barcode, `slot 3`, `drive 2`, a pool's or media type's name.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::Value;

use crate::proto::types::{
    DriveDetails, IePortDetails, LibRequestDetails, LibraryDetails, Location, LocationKind, Notification,
    ObjectDetails, ObjectInfo, SlotDetails,
};

/// What an id names.
#[derive(Debug, Clone)]
enum Named {
    /// A library, by name.
    Library(String),
    /// A drive, storage slot or mail slot: its kind as people say it, its number, its library's id.
    Element { kind: &'static str, number: u32, library: String },
    /// Anything else that has a name people use: a cartridge's barcode, a pool's or media type's name.
    Plain(String),
}

/// Names for the ids objects refer to, learnt from the objects a client has seen, so people read `slot 3`,
/// `drive 2`, `ABC001L6` and `LTO-6` instead of ids. With several libraries an element's label says which
/// (`drive 2 in lib2`).
#[derive(Debug, Clone, Default)]
pub struct Names {
    by_id: HashMap<String, Named>,
    /// Element id by (library id, element address).
    by_address: HashMap<(String, u32), String>,
}

impl Names {
    /// Names for `objects`.
    pub fn new(objects: &[ObjectInfo]) -> Names {
        let mut names = Names::default();
        for o in objects {
            names.add(o);
        }
        names
    }

    /// Learns (or updates) the name of `o`.
    pub fn add(&mut self, o: &ObjectInfo) {
        let element = |kind, number, library: &String, address| {
            (Named::Element { kind, number, library: library.clone() }, Some((library.clone(), address)))
        };
        let (named, address) = match &o.details {
            ObjectDetails::Library(_) => (Named::Library(o.name.clone()), None),
            ObjectDetails::Drive(d) => element("drive", d.number, &d.library, d.element_address),
            ObjectDetails::StorageSlot(s) => element("slot", s.number, &s.library, s.element_address),
            ObjectDetails::IePort(p) => element("mail slot", p.number, &p.library, p.element_address),
            ObjectDetails::PhysicalMedia(m) => {
                (Named::Plain(m.barcode.clone().unwrap_or_else(|| o.name.clone())), None)
            }
            ObjectDetails::MediaPool(_) | ObjectDetails::MediaType(_) => (Named::Plain(o.name.clone()), None),
            ObjectDetails::Changer(c) => (Named::Plain(c.device.clone().unwrap_or_else(|| o.name.clone())), None),
            ObjectDetails::Computer(_) | ObjectDetails::LibRequest(_) | ObjectDetails::OpRequest(_) => return,
        };
        if let Some(key) = address {
            self.by_address.insert(key, o.id.clone());
        }
        self.by_id.insert(o.id.clone(), named);
    }

    fn several_libraries(&self) -> bool {
        self.by_id.values().filter(|n| matches!(n, Named::Library(_))).count() > 1
    }

    /// The label of the object `id` names, when known: `drive 2`, `slot 5`, `mail slot 21`, a library's, pool's
    /// or media type's name, a cartridge's barcode.
    pub fn label(&self, id: &str) -> Option<String> {
        Some(match self.by_id.get(id)? {
            Named::Library(name) | Named::Plain(name) => name.clone(),
            Named::Element { kind, number, library } => match self.by_id.get(library) {
                Some(Named::Library(lib)) if self.several_libraries() => format!("{kind} {number} in {lib}"),
                _ => format!("{kind} {number}"),
            },
        })
    }

    /// [`Names::label`], else the id itself.
    pub fn label_or_id(&self, id: &str) -> String {
        self.label(id).unwrap_or_else(|| id.to_owned())
    }

    /// The label of the element at SMC element `address` in `library`.
    pub fn element_at(&self, library: &str, address: u32) -> Option<String> {
        self.by_address.get(&(library.to_owned(), address)).and_then(|id| self.label(id))
    }

    /// The number of drive `id` (`2`), with its library when there are several (`2 in lib2`).
    pub fn drive_number(&self, id: &str) -> Option<String> {
        match self.by_id.get(id)? {
            Named::Element { kind: "drive", number, library } => match self.by_id.get(library) {
                Some(Named::Library(lib)) if self.several_libraries() => Some(format!("{number} in {lib}")),
                _ => Some(number.to_string()),
            },
            _ => None,
        }
    }

    /// Where a cartridge is, as people say it: `slot 3 (address 1002)`, `drive 0 (address 500)`, `the robot's
    /// hand`, `offline`.
    pub fn location(&self, l: &Location) -> String {
        let address = l.element_address.map(|a| format!(" (address {a})")).unwrap_or_default();
        let by_element = l.element.as_deref().and_then(|e| self.label(e));
        let by_address = || l.library.as_deref().zip(l.element_address).and_then(|(lib, a)| self.element_at(lib, a));
        match (l.kind, by_element.or_else(by_address)) {
            (LocationKind::Offline, _) => "offline".into(),
            (LocationKind::Transport, _) => format!("the robot's hand{address}"),
            (_, Some(label)) => format!("{label}{address}"),
            (kind, None) => format!("{}{address}", json_word(&kind).replace('_', " ")),
        }
    }
}

/// A volume tag as mtx prints it from what the library reported: the barcode and the blanks after it, `width`
/// characters in all (mtx prints the 36-byte field up to its first byte outside 32..=127); nothing when the
/// library reported no printable tag for the element.
pub fn mtx_volume_tag(barcode: Option<&str>, width: Option<u32>) -> Option<String> {
    let width = usize::try_from(width.filter(|w| *w > 0)?).ok()?;
    let tag = barcode.unwrap_or("");
    Some(format!("{tag:<width$}"))
}

/// The parts of one library found among a set of objects, in mtx order.
struct LibraryView<'a> {
    info: &'a ObjectInfo,
    details: &'a LibraryDetails,
    device: Option<&'a str>,
    drives: Vec<(&'a ObjectInfo, &'a DriveDetails)>,
    slots: Vec<&'a SlotDetails>,
    ports: Vec<&'a IePortDetails>,
}

impl<'a> LibraryView<'a> {
    fn all(objects: &'a [ObjectInfo]) -> Vec<LibraryView<'a>> {
        let mut views: Vec<LibraryView<'a>> = objects
            .iter()
            .filter_map(|o| match &o.details {
                ObjectDetails::Library(details) => Some(LibraryView {
                    info: o,
                    details,
                    device: None,
                    drives: Vec::new(),
                    slots: Vec::new(),
                    ports: Vec::new(),
                }),
                _ => None,
            })
            .collect();
        for o in objects {
            let lib = match &o.details {
                ObjectDetails::Changer(c) => &c.library,
                ObjectDetails::Drive(d) => &d.library,
                ObjectDetails::StorageSlot(s) => &s.library,
                ObjectDetails::IePort(p) => &p.library,
                _ => continue,
            };
            let Some(view) = views.iter_mut().find(|v| &v.info.id == lib) else {
                continue;
            };
            match &o.details {
                ObjectDetails::Changer(c) => view.device = view.device.or(c.device.as_deref()),
                ObjectDetails::Drive(d) => view.drives.push((o, d)),
                ObjectDetails::StorageSlot(s) => view.slots.push(s),
                ObjectDetails::IePort(p) => view.ports.push(p),
                _ => {}
            }
        }
        for v in &mut views {
            v.drives.sort_by_key(|(_, d)| (d.number, d.element_address));
            v.slots.sort_by_key(|s| (s.number, s.element_address));
            v.ports.sort_by_key(|p| (p.number, p.element_address));
        }
        views
    }

    /// mtx's storage element number (1-based, mail slots after storage slots) by element address.
    fn mtx_numbers(&self) -> HashMap<u32, usize> {
        let addresses =
            self.slots.iter().map(|s| s.element_address).chain(self.ports.iter().map(|p| p.element_address));
        addresses.enumerate().map(|(i, a)| (a, i + 1)).collect()
    }
}

/// Renders every library among `objects` exactly as `mtx -f <changer> status` prints it, one block per library:
/// drives count from 0, storage elements from 1, mail slots are numbered after the storage slots and marked
/// `IMPORT/EXPORT`, and volume tags are as wide as the library reports them (mtx prints the tag field up to its
/// first non-printable byte: `ABC001L6` and 24 blanks on tgt, 28 on libraries that pad the whole field, and no
/// `:VolumeTag=` part for an empty element whose tag is all NULs). `objects` should hold the libraries, changers, drives, slots and ports.
pub fn mtx_status(objects: &[ObjectInfo]) -> String {
    super::mtx::MtxLibrary::all(objects)
        .iter()
        .map(|l| l.status(l.device.as_deref().unwrap_or(&l.name), true))
        .collect()
}

fn or_dash(s: Option<&str>) -> &str {
    s.unwrap_or("-")
}

fn json_word(v: &impl serde::Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}

/// Lays out rows in columns separated by two spaces; the last column is not padded.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let head: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&head).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A readable overview: per library, its drives (with what they hold and their /dev nodes), storage slots and
/// mail slots.
pub fn status_table(objects: &[ObjectInfo]) -> String {
    let mut out = String::new();
    for lib in LibraryView::all(objects) {
        let numbers = lib.mtx_numbers();
        let _ = writeln!(
            out,
            "Library {} ({}): {}, {}, changer {}",
            lib.info.name,
            lib.info.id,
            json_word(&lib.details.kind),
            lib.info.state,
            or_dash(lib.device)
        );
        if !lib.info.description.is_empty() {
            let _ = writeln!(out, "  {}", lib.info.description);
        }
        let _ = writeln!(
            out,
            "  {} drives, {} slots, {} mail slots{}",
            lib.drives.len(),
            lib.slots.len(),
            lib.ports.len(),
            match lib.details.door_open {
                Some(true) => ", door open",
                _ => "",
            }
        );
        out.push_str("\nDrives:\n");
        let rows: Vec<Vec<String>> = lib
            .drives
            .iter()
            .map(|(info, d)| {
                let from = d.source_element.and_then(|a| numbers.get(&a)).map(|n| format!("slot {n}"));
                vec![
                    d.number.to_string(),
                    json_word(&d.state),
                    or_dash(d.barcode.as_deref().or(d.media.as_deref())).to_owned(),
                    from.unwrap_or_else(|| "-".into()),
                    or_dash(d.devices.nst.as_deref()).to_owned(),
                    or_dash(d.devices.sg.as_deref()).to_owned(),
                    or_dash(d.serial.as_deref()).to_owned(),
                    if d.needs_cleaning { format!("{} (needs cleaning)", info.id) } else { info.id.clone() },
                ]
            })
            .collect();
        out.push_str(&indent(&table(&["#", "STATE", "MEDIA", "FROM", "TAPE", "SG", "SERIAL", "ID"], &rows)));
        out.push_str("\nSlots:\n");
        let rows: Vec<Vec<String>> = lib
            .slots
            .iter()
            .map(|s| {
                vec![
                    s.number.to_string(),
                    s.element_address.to_string(),
                    if s.full { or_dash(s.barcode.as_deref()).to_owned() } else { "empty".into() },
                    if s.cleaner_slot { "cleaner slot".into() } else { String::new() },
                ]
            })
            .collect();
        out.push_str(&indent(&table(&["#", "ADDR", "MEDIA", "NOTE"], &rows)));
        if !lib.ports.is_empty() {
            out.push_str("\nMail slots:\n");
            let rows: Vec<Vec<String>> = lib
                .ports
                .iter()
                .map(|p| {
                    vec![
                        p.number.to_string(),
                        p.element_address.to_string(),
                        if p.full { or_dash(p.barcode.as_deref()).to_owned() } else { "empty".into() },
                        match (p.import_enabled, p.export_enabled) {
                            (true, true) => "import/export",
                            (true, false) => "import",
                            (false, true) => "export",
                            (false, false) => "disabled",
                        }
                        .into(),
                    ]
                })
                .collect();
            out.push_str(&indent(&table(&["#", "ADDR", "MEDIA", "DIRECTION"], &rows)));
        }
        out.push('\n');
    }
    if out.is_empty() {
        out.push_str("No libraries.\n");
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// A one-line summary of an object's type-specific part, with the ids it refers to named by `names`.
pub fn summary(details: &ObjectDetails, names: &Names) -> String {
    match details {
        ObjectDetails::Computer(c) => format!("{} rsmd {}, {} libraries", c.host_name, c.version, c.library_count),
        ObjectDetails::Library(l) => {
            format!("{} {} drives {} slots {} ports", json_word(&l.kind), l.drive_count, l.slot_count, l.ie_port_count)
        }
        ObjectDetails::Changer(c) => format!("{} addr {}", or_dash(c.device.as_deref()), c.element_address),
        ObjectDetails::Drive(d) => format!(
            "#{} {} {} {}",
            d.number,
            json_word(&d.state),
            or_dash(d.barcode.as_deref()),
            or_dash(d.devices.nst.as_deref().or(d.devices.sg.as_deref()))
        ),
        ObjectDetails::StorageSlot(s) => {
            format!(
                "#{} addr {} {}",
                s.number,
                s.element_address,
                if s.full { or_dash(s.barcode.as_deref()) } else { "empty" }
            )
        }
        ObjectDetails::IePort(p) => {
            format!(
                "#{} addr {} {}",
                p.number,
                p.element_address,
                if p.full { or_dash(p.barcode.as_deref()) } else { "empty" }
            )
        }
        ObjectDetails::MediaType(t) => format!("{} sides {}", t.family, t.sides),
        ObjectDetails::PhysicalMedia(m) => {
            let mut text = format!("{} in {}", or_dash(m.barcode.as_deref()), names.location(&m.location));
            if let Some(pool) = &m.pool_name {
                text.push_str(&format!(", pool {pool}"));
            }
            if let Some(side) = &m.side {
                text.push_str(&format!(", {side}"));
            }
            format!("{text}, mounts {}", m.mount_count)
        }
        ObjectDetails::MediaPool(p) => format!("{} {} media", json_word(&p.kind), p.media_count),
        ObjectDetails::LibRequest(r) => {
            let mut text = json_word(&r.operation);
            if let Some(m) = &r.media {
                let _ = write!(text, " {}", names.label_or_id(m));
            }
            if let Some(d) = &r.drive {
                let _ = write!(text, " drive {}", names.drive_number(d).unwrap_or_else(|| d.clone()));
            }
            let _ = write!(text, " {}", json_word(&r.state));
            if let Some(e) = &r.error {
                let _ = write!(text, ": {e}");
            }
            text
        }
        ObjectDetails::OpRequest(r) => {
            format!("{} {}: {}", json_word(&r.kind), json_word(&r.state), r.text)
        }
    }
}

/// A table of objects (`rsm view`): id, name, state, enabled, summary.
pub fn objects_table(objects: &[ObjectInfo], names: &Names) -> String {
    if objects.is_empty() {
        return "No objects.\n".into();
    }
    let rows: Vec<Vec<String>> = objects
        .iter()
        .map(|o| {
            vec![
                o.id.clone(),
                o.name.clone(),
                o.state.clone(),
                if o.enabled { "yes" } else { "no" }.into(),
                summary(&o.details, names),
            ]
        })
        .collect();
    table(&["ID", "NAME", "STATE", "ENABLED", "DETAILS"], &rows)
}

/// `rsm pools`: one line per pool, by path.
pub fn pools_table(objects: &[ObjectInfo]) -> String {
    let rows: Vec<Vec<String>> = objects
        .iter()
        .filter_map(|o| match &o.details {
            ObjectDetails::MediaPool(p) => Some((o, p)),
            _ => None,
        })
        .map(|(o, p)| {
            let mut policy = Vec::new();
            if p.draw_from_free {
                policy.push("draw-from-free".to_owned());
            }
            if p.return_to_free {
                policy.push("return-to-free".to_owned());
            }
            if let Some(n) = p.max_allocations {
                policy.push(format!("max-allocations={n}"));
            }
            let owner = match (p.owner_uid, p.owner_application.as_deref()) {
                (Some(u), Some(a)) => format!("uid {u} ({a})"),
                (Some(u), None) => format!("uid {u}"),
                _ => "-".into(),
            };
            vec![
                o.name.clone(),
                json_word(&p.kind),
                p.media_count.to_string(),
                p.allocated_count.to_string(),
                if policy.is_empty() { "-".into() } else { policy.join(",") },
                owner,
            ]
        })
        .collect();
    if rows.is_empty() {
        return "No pools.\n".into();
    }
    table(&["POOL", "KIND", "MEDIA", "ALLOCATED", "POLICY", "OWNER"], &rows)
}

/// `rsm media`: one line per cartridge with its pool, side state, place and owner.
pub fn media_table(objects: &[ObjectInfo], names: &Names) -> String {
    let rows: Vec<Vec<String>> = objects
        .iter()
        .filter_map(|o| match &o.details {
            ObjectDetails::PhysicalMedia(m) => Some((o, m)),
            _ => None,
        })
        .map(|(o, m)| {
            let place = match (&m.location.kind, m.location.element.as_deref()) {
                (crate::proto::types::LocationKind::Offline, _) => "offline".to_owned(),
                (_, Some(e)) => names.label_or_id(e),
                (k, None) => json_word(k),
            };
            let owner = match (m.owner_uid, m.owner_application.as_deref()) {
                (Some(u), Some(a)) => format!("uid {u} ({a})"),
                (Some(u), None) => format!("uid {u}"),
                _ => "-".into(),
            };
            let mut state = or_dash(m.side.as_deref()).to_owned();
            if !o.enabled {
                state.push_str(",disabled");
            }
            vec![
                o.name.clone(),
                or_dash(m.media_type_name.as_deref()).to_owned(),
                or_dash(m.pool_name.as_deref()).to_owned(),
                state,
                place,
                owner,
                or_dash(m.logical_media.as_deref()).to_owned(),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "No media.\n".into();
    }
    table(&["BARCODE", "TYPE", "POOL", "SIDE", "WHERE", "ALLOCATED TO", "LOGICAL MEDIA"], &rows)
}

/// A table of library requests (`rsm requests`): cartridges by barcode and drives by number (with a library
/// column when there are several libraries).
pub fn requests_table(objects: &[ObjectInfo], names: &Names) -> String {
    let several = names.several_libraries();
    let rows: Vec<Vec<String>> = objects
        .iter()
        .filter_map(|o| match &o.details {
            ObjectDetails::LibRequest(r) => Some((o, r)),
            _ => None,
        })
        .map(|(o, r): (&ObjectInfo, &LibRequestDetails)| {
            let mut row = vec![o.id.clone(), json_word(&r.operation), json_word(&r.state), r.priority.to_string()];
            if several {
                row.push(r.library.as_deref().map_or_else(|| "-".into(), |l| names.label_or_id(l)));
            }
            row.extend([
                r.media.as_deref().map_or_else(|| "-".into(), |m| names.label_or_id(m)),
                r.drive.as_deref().map_or_else(
                    || "-".into(),
                    |d| {
                        // The number within its library: the library has its own column.
                        match names.by_id.get(d) {
                            Some(Named::Element { number, .. }) => number.to_string(),
                            _ => d.to_owned(),
                        }
                    },
                ),
                or_dash(r.application.as_deref()).to_owned(),
                or_dash(r.error.as_deref()).to_owned(),
            ]);
            row
        })
        .collect();
    if rows.is_empty() {
        return "No library requests.\n".into();
    }
    let mut header = vec!["ID", "OPERATION", "STATE", "PRIO"];
    if several {
        header.push("LIBRARY");
    }
    header.extend(["MEDIA", "DRIVE", "APPLICATION", "ERROR"]);
    table(&header, &rows)
}

/// Operator requests as `rsm operator` prints them: number, kind, state, when, from whom, what about, the text.
pub fn operator_table(objects: &[ObjectInfo], names: &Names) -> String {
    let rows: Vec<Vec<String>> = objects
        .iter()
        .filter_map(|o| match &o.details {
            ObjectDetails::OpRequest(r) => Some(r),
            _ => None,
        })
        .map(|r| {
            let from = match (&r.application, r.uid) {
                (Some(a), Some(u)) => format!("{a} (uid {u})"),
                (None, Some(u)) => format!("uid {u}"),
                (a, None) => or_dash(a.as_deref()).to_owned(),
            };
            let mut text = r.text.clone();
            if let Some(why) = r.reason.as_deref().filter(|_| r.state != crate::proto::types::OpRequestState::Active) {
                text.push_str(&format!(" [{why}]"));
            }
            vec![
                r.number.map_or_else(|| "-".into(), |n| n.to_string()),
                json_word(&r.kind),
                json_word(&r.state),
                time_text(r.submitted),
                from,
                r.object.as_deref().map_or_else(|| "-".into(), |o| names.label_or_id(o)),
                text,
            ]
        })
        .collect();
    if rows.is_empty() {
        return "No operator requests.\n".into();
    }
    table(&["NUMBER", "KIND", "STATE", "SUBMITTED", "FROM", "OBJECT", "TEXT"], &rows)
}

/// Every field of one object, `key: value` per line (`rsm info`). Ids of other objects are shown as `names`
/// calls them, a cartridge's location as `slot 3 (address 1002)`, and a drive's source element by its number.
pub fn object_info(object: &ObjectInfo, names: &Names) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "id: {}", object.id);
    let _ = writeln!(out, "type: {}", object.object_type.wire_name());
    let _ = writeln!(out, "name: {}", object.name);
    let _ = writeln!(out, "description: {}", object.description);
    let _ = writeln!(out, "enabled: {}", object.enabled);
    let _ = writeln!(out, "state: {}", object.state);
    let _ = writeln!(out, "created: {}", time_text(object.created));
    let _ = writeln!(out, "modified: {}", time_text(object.modified));
    let library = match &object.details {
        ObjectDetails::Drive(d) => Some(d.library.as_str()),
        _ => None,
    };
    if let Ok(Value::Object(outer)) = serde_json::to_value(&object.details) {
        for inner in outer.values() {
            if let Value::Object(fields) = inner {
                write_fields(&mut out, "", fields, names, library);
            }
        }
    }
    out
}

/// A Unix time in ms for people: `2026-11-30 16:58:11 UTC` (`-` for 0, never set).
pub fn time_text(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rest / 3600, rest % 3600 / 60, rest % 60)
}

fn write_fields(
    out: &mut String,
    prefix: &str,
    fields: &serde_json::Map<String, Value>,
    names: &Names,
    library: Option<&str>,
) {
    let word = |v: &Value| match v {
        Value::String(s) => names.label_or_id(s),
        other => other.to_string(),
    };
    for (key, value) in fields {
        match (key.as_str(), value) {
            ("location", Value::Object(_)) => {
                if let Ok(l) = serde_json::from_value::<Location>(value.clone()) {
                    let _ = writeln!(out, "{prefix}location: {}", names.location(&l));
                }
            }
            ("source_element", Value::Number(n)) => {
                let address = n.as_u64().and_then(|a| u32::try_from(a).ok());
                let label = library.zip(address).and_then(|(lib, a)| names.element_at(lib, a));
                match label {
                    Some(l) => {
                        let _ = writeln!(out, "{prefix}{key}: {l} (address {n})");
                    }
                    None => {
                        let _ = writeln!(out, "{prefix}{key}: address {n}");
                    }
                }
            }
            ("submitted" | "started" | "completed" | "last_cleaned", Value::Number(n)) => {
                let _ = writeln!(out, "{prefix}{key}: {}", time_text(n.as_u64().unwrap_or(0)));
            }
            (_, Value::Object(sub)) => write_fields(out, &format!("{prefix}{key}."), sub, names, library),
            (_, Value::Null) => {
                let _ = writeln!(out, "{prefix}{key}: -");
            }
            (_, Value::Array(items)) => {
                let words: Vec<String> = items.iter().map(word).collect();
                let _ = writeln!(out, "{prefix}{key}: {}", words.join(", "));
            }
            (_, other) => {
                let _ = writeln!(out, "{prefix}{key}: {}", word(other));
            }
        }
    }
}

/// One line for a change `rsm watch` saw: the operation, the object as people name it, its state and summary
/// (`update drive 0: loaded, #0 loaded ABC001L6 /dev/nst0`). `object` is the object as it is now (None when it
/// is gone).
pub fn change_line(n: &Notification, object: Option<&ObjectInfo>, names: &Names) -> String {
    let label = names.label(&n.object).unwrap_or_else(|| format!("{} {}", n.object_type.wire_name(), n.object));
    let label = match n.object_type {
        crate::proto::ObjectType::PhysicalMedia
        | crate::proto::ObjectType::Library
        | crate::proto::ObjectType::MediaPool
        | crate::proto::ObjectType::MediaType
            if names.label(&n.object).is_some() =>
        {
            format!("{} {label}", n.object_type.wire_name().replace('_', " "))
        }
        _ => label,
    };
    let label = match n.object_type {
        crate::proto::ObjectType::LibRequest => format!("request {}", n.object),
        _ => label,
    };
    match object {
        // A request's summary has its state already.
        Some(o) if o.object_type == crate::proto::ObjectType::LibRequest => {
            format!("{} {label}: {}", json_word(&n.operation), summary(&o.details, names))
        }
        Some(o) => format!("{} {label}: {}, {}", json_word(&n.operation), o.state, summary(&o.details, names)),
        None => format!("{} {label}", json_word(&n.operation)),
    }
}

#[cfg(test)]
mod tests;
