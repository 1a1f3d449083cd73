//! Pure text formatting of wire objects for `rsm`: mtx's `status` format, readable tables, object details.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::Value;

use crate::proto::types::{
    DriveDetails, IePortDetails, LibRequestDetails, LibraryDetails, ObjectDetails, ObjectInfo, SlotDetails,
};

/// Width of the volume tag field mtx prints: the 32-byte primary volume tag identifier (SMC-3 6.10.3), space
/// padded as the library returns it.
pub const VOLUME_TAG_WIDTH: usize = 32;

/// A barcode as mtx shows it: truncated or space-padded to [`VOLUME_TAG_WIDTH`].
pub fn pad_volume_tag(tag: &str) -> String {
    let tag: String = tag.chars().take(VOLUME_TAG_WIDTH).collect();
    format!("{tag:<VOLUME_TAG_WIDTH$}")
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

    fn changer_name(&self) -> &str {
        self.device.unwrap_or(&self.info.name)
    }
}

/// Renders every library among `objects` exactly as `mtx -f <changer> status` prints it, one block per library:
/// drives count from 0, storage elements from 1, mail slots are numbered after the storage slots and marked
/// `IMPORT/EXPORT`, and volume tags are padded to 32 bytes. Libraries without a barcode reader print no tags, as
/// mtx does when the library returns none. `objects` should hold the libraries, changers, drives, slots and ports.
pub fn mtx_status(objects: &[ObjectInfo]) -> String {
    let mut out = String::new();
    for lib in LibraryView::all(objects) {
        let numbers = lib.mtx_numbers();
        let _ = writeln!(
            out,
            "  Storage Changer {}:{} Drives, {} Slots ( {} Import/Export )",
            lib.changer_name(),
            lib.drives.len(),
            lib.slots.len() + lib.ports.len(),
            lib.ports.len()
        );
        for (index, (_, d)) in lib.drives.iter().enumerate() {
            let _ = write!(out, "Data Transfer Element {index}:");
            if d.media.is_none() && d.barcode.is_none() {
                out.push_str("Empty\n");
                continue;
            }
            match d.source_element.and_then(|a| numbers.get(&a)) {
                Some(n) => {
                    let _ = write!(out, "Full (Storage Element {n} Loaded)");
                }
                None => out.push_str("Full (Unknown Storage Element Loaded)"),
            }
            if let Some(tag) = d.barcode.as_deref().filter(|_| lib.details.barcode_reader) {
                let _ = write!(out, ":VolumeTag = {}", pad_volume_tag(tag));
            }
            out.push('\n');
        }
        let elements = lib
            .slots
            .iter()
            .map(|s| (s.full, s.barcode.as_deref(), false))
            .chain(lib.ports.iter().map(|p| (p.full, p.barcode.as_deref(), true)));
        for (index, (full, barcode, ie)) in elements.enumerate() {
            let _ = write!(
                out,
                "      Storage Element {}{}:{}",
                index + 1,
                if ie { " IMPORT/EXPORT" } else { "" },
                if full { "Full " } else { "Empty" }
            );
            if lib.details.barcode_reader {
                let _ = write!(out, ":VolumeTag={}", pad_volume_tag(barcode.unwrap_or("")));
            }
            out.push('\n');
        }
    }
    out
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
                .enumerate()
                .map(|(i, p)| {
                    vec![
                        (lib.slots.len() + i + 1).to_string(),
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

/// A one-line summary of an object's type-specific part.
pub fn summary(details: &ObjectDetails) -> String {
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
            or_dash(d.devices.nst.as_deref())
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
        ObjectDetails::PhysicalMedia(m) => format!(
            "{} in {}{} mounts {}",
            or_dash(m.barcode.as_deref()),
            json_word(&m.location.kind),
            m.location.element_address.map(|a| format!(" {a}")).unwrap_or_default(),
            m.mount_count
        ),
        ObjectDetails::MediaPool(p) => format!("{} {} media", json_word(&p.kind), p.media_count),
        ObjectDetails::LibRequest(r) => {
            format!("{} {}", json_word(&r.operation), json_word(&r.state))
        }
        ObjectDetails::OpRequest(r) => {
            format!("{} {}: {}", json_word(&r.kind), json_word(&r.state), r.text)
        }
    }
}

/// A table of objects (`rsm view`): id, name, state, enabled, summary.
pub fn objects_table(objects: &[ObjectInfo]) -> String {
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
                summary(&o.details),
            ]
        })
        .collect();
    table(&["ID", "NAME", "STATE", "ENABLED", "DETAILS"], &rows)
}

/// A table of library requests (`rsm requests`).
pub fn requests_table(objects: &[ObjectInfo]) -> String {
    let rows: Vec<Vec<String>> = objects
        .iter()
        .filter_map(|o| match &o.details {
            ObjectDetails::LibRequest(r) => Some((o, r)),
            _ => None,
        })
        .map(|(o, r): (&ObjectInfo, &LibRequestDetails)| {
            vec![
                o.id.clone(),
                json_word(&r.operation),
                json_word(&r.state),
                r.priority.to_string(),
                or_dash(r.media.as_deref()).to_owned(),
                or_dash(r.drive.as_deref()).to_owned(),
                or_dash(r.application.as_deref()).to_owned(),
                or_dash(r.error.as_deref()).to_owned(),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "No library requests.\n".into();
    }
    table(&["ID", "OPERATION", "STATE", "PRIO", "MEDIA", "DRIVE", "APPLICATION", "ERROR"], &rows)
}

/// Every field of one object, `key: value` per line (`rsm info`).
pub fn object_info(object: &ObjectInfo) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "id: {}", object.id);
    let _ = writeln!(out, "type: {}", object.object_type.wire_name());
    let _ = writeln!(out, "name: {}", object.name);
    let _ = writeln!(out, "description: {}", object.description);
    let _ = writeln!(out, "enabled: {}", object.enabled);
    let _ = writeln!(out, "state: {}", object.state);
    let _ = writeln!(out, "created: {}", object.created);
    let _ = writeln!(out, "modified: {}", object.modified);
    if let Ok(Value::Object(outer)) = serde_json::to_value(&object.details) {
        for inner in outer.values() {
            if let Value::Object(fields) = inner {
                write_fields(&mut out, "", fields);
            }
        }
    }
    out
}

fn write_fields(out: &mut String, prefix: &str, fields: &serde_json::Map<String, Value>) {
    for (key, value) in fields {
        match value {
            Value::Object(sub) => write_fields(out, &format!("{prefix}{key}."), sub),
            Value::Null => {
                let _ = writeln!(out, "{prefix}{key}: -");
            }
            Value::String(s) => {
                let _ = writeln!(out, "{prefix}{key}: {s}");
            }
            Value::Array(items) => {
                let words: Vec<String> =
                    items.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)).collect();
                let _ = writeln!(out, "{prefix}{key}: {}", words.join(", "));
            }
            other => {
                let _ = writeln!(out, "{prefix}{key}: {other}");
            }
        }
    }
}

#[cfg(test)]
mod tests;
