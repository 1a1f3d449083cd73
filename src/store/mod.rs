//! The inventory on disk, in sled. The only module that names sled.
//!
//! Trees: `libraries` (key: library id, 16 bytes), `elements` (library id + element type code + address, 19 bytes,
//! big-endian so a library's elements scan in address order), `media` (media id), `media_by_barcode` (barcode →
//! media id), `requests` (request id, 8 bytes big-endian), `meta` (`schema_version`). Values are JSON.
//!
//! Durability: [`Store::apply`] writes a batch atomically (a sled transaction over all trees); [`Store::flush`]
//! puts it on disk. The server never waits for a flush on its loop: [`Writer`] runs them on a thread, merging every
//! batch that arrives while a flush runs into the next one (group commit), and reports the highest durable batch.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use crate::model::{Guid, MediaRecord};

/// The schema this build writes.
pub const SCHEMA_VERSION: u32 = 1;

/// How often, and how far apart, [`Store::open`] tries a locked database (5 s in all).
const LOCK_ATTEMPTS: u32 = 250;
const LOCK_RETRY: Duration = Duration::from_millis(20);

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (I/O, corruption).
    #[error("Database error")]
    Db(#[from] sled::Error),
    /// A record could not be encoded or decoded.
    #[error("Corrupt record in tree {tree}")]
    Record {
        /// The tree.
        tree: &'static str,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// Another process holds the database (another rsmd on the same state directory).
    #[error("{path} is locked by another process (is another rsmd using this state directory?)")]
    Locked {
        /// The database path.
        path: PathBuf,
    },
    /// The database was written by a newer rsmd.
    #[error("Database schema version {found} is newer than this rsmd supports ({supported})")]
    TooNew {
        /// Version found on disk.
        found: u32,
        /// Version this build writes.
        supported: u32,
    },
    /// The writer thread is gone.
    #[error("The database writer stopped")]
    WriterGone,
}

pub use crate::model::{Change, DriveMaps, Record, Snapshot};

/// The file in the state directory where `rsmd --map-drives` keeps the drive mappings it found:
/// `{"changers": {CHANGER_SERIAL: {DRIVE_SERIAL: ELEMENT_ADDRESS}}}`.
pub const DRIVE_MAP_FILE: &str = "drive-map.json";

/// The drive mappings saved in `state_dir` by `rsmd --map-drives`, by changer serial: (drive serial, element
/// address). A missing file is no mapping; an unreadable one is logged and ignored. Blocking: read it off the loop.
pub fn drive_maps(state_dir: &Path) -> DriveMaps {
    #[derive(Deserialize, Default)]
    struct File {
        changers: std::collections::BTreeMap<String, std::collections::BTreeMap<String, u16>>,
    }
    let path = state_dir.join(DRIVE_MAP_FILE);
    let file: File = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            log::warn!("Ignoring {}: {e}", path.display());
            File::default()
        }),
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("Cannot read {}: {e}", path.display());
            }
            File::default()
        }
    };
    file.changers.into_iter().map(|(k, v)| (k, v.into_iter().collect())).collect()
}

/// The opened database.
#[derive(Debug, Clone)]
pub struct Store {
    /// The state directory it was opened in (to reopen it: [`Writer`]).
    dir: std::path::PathBuf,
    db: sled::Db,
    libraries: sled::Tree,
    elements: sled::Tree,
    media: sled::Tree,
    barcodes: sled::Tree,
    requests: sled::Tree,
    pools: sled::Tree,
    operators: sled::Tree,
    meta: sled::Tree,
}

/// Key of an element: library id, element type code, address.
pub fn element_key(library: Guid, kind: u8, address: u16) -> [u8; 19] {
    let mut k = [0u8; 19];
    k[..16].copy_from_slice(&library.to_be_bytes());
    k[16] = kind;
    k[17..].copy_from_slice(&address.to_be_bytes());
    k
}

fn encode<T: Serialize>(v: &T, tree: &'static str) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|source| StoreError::Record { tree, source })
}

fn decode<T: DeserializeOwned>(v: &[u8], tree: &'static str) -> Result<T, StoreError> {
    serde_json::from_slice(v).map_err(|source| StoreError::Record { tree, source })
}

/// The kind byte of the frame that ends a dump ([`Store::dump`]).
pub const DUMP_END: u8 = 0xFF;

fn decode_record(kind: u8, v: &[u8], name: &'static str) -> Result<Record, StoreError> {
    Ok(match kind {
        0 => Record::Library(decode(v, name)?),
        1 => Record::Element(decode(v, name)?),
        2 => Record::Pool(decode(v, name)?),
        3 => Record::Media(decode(v, name)?),
        4 => Record::Request(decode(v, name)?),
        _ => Record::Operator(decode(v, name)?),
    })
}

/// Reads a dump ([`Store::dump`]) from `input`, decoding each record for `f`. A stream that ends before the end
/// frame, or holds an unknown kind, is an error: nothing read is to be trusted then.
pub fn read_dump(input: &mut impl std::io::Read, mut f: impl FnMut(Record)) -> Result<(), StoreError> {
    const NAMES: [&str; 6] = ["libraries", "elements", "pools", "media", "requests", "operator_requests"];
    let io = |e: std::io::Error| StoreError::Db(sled::Error::Io(e));
    let mut head = [0u8; 5];
    // One buffer for every record: the bytes are decoded and dropped, so that only what `f` keeps is allocated.
    let mut buf = Vec::with_capacity(4096);
    loop {
        input.read_exact(&mut head).map_err(io)?;
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
        match head[0] {
            DUMP_END if len == 0 => return Ok(()),
            kind @ 0..=5 => {
                buf.resize(len, 0);
                input.read_exact(&mut buf).map_err(io)?;
                f(decode_record(kind, &buf, NAMES[usize::from(kind)])?);
            }
            _ => return Err(io(std::io::Error::new(std::io::ErrorKind::InvalidData, "bad frame in the dump"))),
        }
    }
}

/// Loads every record of the database in `dir` for `f`, read by a helper process (`helper --dump-store DIR`,
/// rsmd itself), and then opens the database for this process.
///
/// Why another process: sled keeps in memory every page it has read, about the database's size whatever its
/// cache setting (39 MB after reading a 50,000-cartridge database), and frees it only when the database is
/// closed; even then the freed memory stays with this process, in holes between the inventory's allocations.
/// Read by a helper that exits, it is given back to the system whole. The database is opened (and checked:
/// lock, schema) first, here, so that its errors are this process's; when the helper cannot run or fails, the
/// records are read here instead: `f` then gets `None` (forget what came so far) and every record again.
pub fn load_through(dir: &Path, helper: Option<&Path>, mut f: impl FnMut(Option<Record>)) -> Result<Store, StoreError> {
    drop(Store::open(dir)?);
    if let Some(helper) = helper {
        match dump_through(dir, helper, &mut |r| f(Some(r))) {
            Ok(()) => {
                log::info!("database read by a helper process ({} --dump-store)", helper.display());
                return Store::open(dir);
            }
            Err(e) => {
                log::warn!(
                    "reading the database in a helper process failed ({}): reading it here",
                    crate::error_chain(&e)
                );
                f(None);
            }
        }
    }
    let store = Store::open(dir)?;
    store.load_each(|r| f(Some(r)))?;
    Ok(store)
}

fn dump_through(dir: &Path, helper: &Path, f: &mut impl FnMut(Record)) -> Result<(), StoreError> {
    let io = |e: std::io::Error| StoreError::Db(sled::Error::Io(e));
    let mut child = std::process::Command::new(helper)
        .arg("--dump-store")
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(io)?;
    let read = match child.stdout.take() {
        Some(out) => read_dump(&mut std::io::BufReader::with_capacity(1 << 16, out), f),
        None => Err(io(std::io::ErrorKind::BrokenPipe.into())),
    };
    if read.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().map_err(io)?;
    read?;
    if status.success() {
        Ok(())
    } else {
        Err(io(std::io::Error::other(format!("{} --dump-store: {status}", helper.display()))))
    }
}

/// One write: (tree index, key, value; None removes).
type Write = (usize, Vec<u8>, Option<Vec<u8>>);

/// The most writes one sled transaction takes (see [`Store::apply`]).
pub const MAX_TRANSACTION_OPS: usize = 1024;

impl Store {
    /// Opens (creating) the database in `dir`, checking and migrating the schema.
    ///
    /// Fails with [`StoreError::Locked`] when another process keeps the database locked for 5 s.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_waiting(dir, LOCK_ATTEMPTS)
    }

    /// [`Store::open`], trying a locked database `lock_attempts` times.
    fn open_waiting(dir: &Path, lock_attempts: u32) -> Result<Store, StoreError> {
        let path = dir.join("inventory.sled");
        let config = sled::Config::new()
            .path(&path)
            .mode(sled::Mode::HighThroughput)
            // A fixed page cache: sled's default asks the cgroup and complains in small VMs and containers.
            .cache_capacity(16 << 20);
        // sled's background threads may hold the file lock briefly after the last handle is dropped (a store
        // reopened in the same process), as may a previous rsmd that is still exiting: wait for it a while.
        let mut attempts = 0;
        let db = loop {
            match config.open() {
                Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                    attempts += 1;
                    if attempts >= lock_attempts {
                        return Err(StoreError::Locked { path });
                    }
                    std::thread::sleep(LOCK_RETRY);
                }
                r => break r?,
            }
        };
        let store = Store {
            libraries: db.open_tree("libraries")?,
            elements: db.open_tree("elements")?,
            media: db.open_tree("media")?,
            barcodes: db.open_tree("media_by_barcode")?,
            requests: db.open_tree("requests")?,
            pools: db.open_tree("pools")?,
            operators: db.open_tree("operator_requests")?,
            meta: db.open_tree("meta")?,
            db,
            dir: dir.to_owned(),
        };
        store.migrate()?;
        Ok(store)
    }

    /// Closes the database and opens it again (giving back the memory sled keeps while a database is open).
    #[allow(clippy::disallowed_methods)] // how long calls waited for it (the log says)
    pub fn reopen(self) -> Result<Store, StoreError> {
        let t0 = std::time::Instant::now();
        let dir = self.dir.clone();
        drop(self);
        let store = Store::open(&dir)?;
        log::debug!("inventory database reopened in {} ms", t0.elapsed().as_millis());
        Ok(store)
    }

    /// The schema version on disk.
    pub fn schema_version(&self) -> Result<Option<u32>, StoreError> {
        Ok(self.meta.get("schema_version")?.and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok()).map(u32::from_be_bytes))
    }

    fn migrate(&self) -> Result<(), StoreError> {
        match self.schema_version()? {
            Some(v) if v > SCHEMA_VERSION => Err(StoreError::TooNew { found: v, supported: SCHEMA_VERSION }),
            Some(v) if v == SCHEMA_VERSION => Ok(()),
            // None: a new database. Older versions would be migrated here, one step at a time.
            _ => {
                self.meta.insert("schema_version", &SCHEMA_VERSION.to_be_bytes())?;
                self.db.flush()?;
                Ok(())
            }
        }
    }

    /// Reads everything into one snapshot (tests; the daemon builds its inventory with [`Store::load_each`]).
    #[cfg(test)]
    pub fn load(&self) -> Result<Snapshot, StoreError> {
        let mut s = Snapshot::default();
        self.load_each(|r| match r {
            Record::Library(l) => s.libraries.push(l),
            Record::Element(e) => s.elements.push(e),
            Record::Media(m) => s.media.push(m),
            Record::Request(q) => s.requests.push(q),
            Record::Pool(p) => s.pools.push(p),
            Record::Operator(o) => s.operators.push(o),
        })?;
        Ok(s)
    }

    /// Reads everything, handing each record to `f` as it is decoded (libraries, elements, pools, media, requests,
    /// operator requests, in that order): a 50,000-cartridge database loads without a second copy of it in memory.
    pub fn load_each(&self, mut f: impl FnMut(Record)) -> Result<(), StoreError> {
        for (tree, name, kind) in self.record_trees() {
            for kv in tree.iter() {
                f(decode_record(kind, &kv?.1, name)?);
            }
        }
        Ok(())
    }

    /// The trees holding records, with their names and frame kinds (see [`Store::dump`]).
    fn record_trees(&self) -> [(&sled::Tree, &'static str, u8); 6] {
        [
            (&self.libraries, "libraries", 0),
            (&self.elements, "elements", 1),
            (&self.pools, "pools", 2),
            (&self.media, "media", 3),
            (&self.requests, "requests", 4),
            (&self.operators, "operator_requests", 5),
        ]
    }

    /// Writes every record, undecoded, to `out` as frames (kind byte, u32 little-endian length, the stored bytes),
    /// then the end frame (kind [`DUMP_END`], length 0): what `rsmd --dump-store` prints for [`load_through`].
    pub fn dump(&self, out: &mut impl std::io::Write) -> Result<(), StoreError> {
        let io = |e: std::io::Error| StoreError::Db(sled::Error::Io(e));
        for (tree, _, kind) in self.record_trees() {
            for kv in tree.iter() {
                let v = kv?.1;
                let len = u32::try_from(v.len()).map_err(|_| io(std::io::ErrorKind::InvalidData.into()))?;
                out.write_all(&[kind]).map_err(io)?;
                out.write_all(&len.to_le_bytes()).map_err(io)?;
                out.write_all(&v).map_err(io)?;
            }
        }
        out.write_all(&[DUMP_END, 0, 0, 0, 0]).map_err(io)?;
        out.flush().map_err(io)
    }

    /// Looks a cartridge up by barcode.
    pub fn media_by_barcode(&self, barcode: &str) -> Result<Option<MediaRecord>, StoreError> {
        let Some(id) = self.barcodes.get(barcode.as_bytes())? else {
            return Ok(None);
        };
        self.media.get(id)?.map(|v| decode(&v, "media")).transpose()
    }

    /// Writes a batch (not yet flushed): atomically when it has at most [`MAX_TRANSACTION_OPS`] writes, which every
    /// batch of a method is; a larger one (the first scan of a big library, 150,000 writes for 50,000 slots) as
    /// several transactions of whole changes, because sled holds a whole transaction in memory (one of 100,000
    /// writes peaked at 560 MB). A crash in between leaves whole records of a prefix: the libraries are marked
    /// stale and rescanned at the next start, which rewrites them.
    pub fn apply(&self, changes: &[Change]) -> Result<(), StoreError> {
        // Encode first so that a bad record fails the batch before anything is written.
        let mut ops: Vec<Write> = Vec::with_capacity(changes.len());
        // Where each change's writes end, so transactions split between changes, never inside one.
        let mut ends = Vec::with_capacity(changes.len());
        for c in changes {
            match c {
                Change::Library(l) => ops.push((0, l.id.to_be_bytes().to_vec(), Some(encode(l, "libraries")?))),
                Change::Element(e) => ops.push((
                    1,
                    element_key(e.library, e.kind.code(), e.address).to_vec(),
                    Some(encode(e, "elements")?),
                )),
                Change::RemoveElement { library, kind, address } => {
                    ops.push((1, element_key(*library, *kind, *address).to_vec(), None))
                }
                Change::Media(m) => {
                    let id = m.id.to_be_bytes().to_vec();
                    let old_barcode = match self.media.get(&id)? {
                        Some(old) => decode::<MediaRecord>(&old, "media")?.barcode,
                        None => None,
                    };
                    // The barcode index is written only when the barcode changes (most updates move a cartridge
                    // or change its state: rewriting an unchanged index entry costs sled a page update).
                    if old_barcode != m.barcode {
                        if let Some(b) = old_barcode {
                            ops.push((3, b.into_bytes(), None));
                        }
                        if let Some(b) = &m.barcode {
                            ops.push((3, b.as_bytes().to_vec(), Some(id.clone())));
                        }
                    }
                    ops.push((2, id, Some(encode(m, "media")?)));
                }
                Change::RemoveMedia(id) => {
                    let key = id.to_be_bytes().to_vec();
                    if let Some(old) = self.media.get(&key)? {
                        let old: MediaRecord = decode(&old, "media")?;
                        if let Some(b) = old.barcode {
                            ops.push((3, b.into_bytes(), None));
                        }
                    }
                    ops.push((2, key, None));
                }
                Change::Request(r) => ops.push((4, r.id.0.to_be_bytes().to_vec(), Some(encode(r, "requests")?))),
                Change::RemoveRequest(id) => ops.push((4, id.0.to_be_bytes().to_vec(), None)),
                Change::Pool(p) => ops.push((5, p.id.to_be_bytes().to_vec(), Some(encode(p, "pools")?))),
                Change::RemovePool(id) => ops.push((5, id.to_be_bytes().to_vec(), None)),
                Change::Operator(o) => {
                    ops.push((6, o.number.to_be_bytes().to_vec(), Some(encode(o, "operator_requests")?)))
                }
                Change::RemoveOperator(n) => ops.push((6, n.to_be_bytes().to_vec(), None)),
            }
            ends.push(ops.len());
        }
        let trees = [
            &self.libraries,
            &self.elements,
            &self.media,
            &self.barcodes,
            &self.requests,
            &self.pools,
            &self.operators,
        ];
        let commit = |chunk: &[Write]| {
            let result: Result<(), TransactionError<()>> = trees[..].transaction(|t| {
                for (tree, key, value) in chunk {
                    match value {
                        Some(v) => t[*tree].insert(key.as_slice(), v.as_slice())?,
                        None => t[*tree].remove(key.as_slice())?,
                    };
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            });
            match result {
                Ok(()) => Ok(()),
                Err(TransactionError::Storage(e)) => Err(StoreError::Db(e)),
                Err(TransactionError::Abort(())) => Err(StoreError::WriterGone),
            }
        };
        // Whole changes, as many as fit (a single larger change goes alone).
        let (mut start, mut last) = (0, 0);
        for &end in &ends {
            if end - start > MAX_TRANSACTION_OPS && last > start {
                commit(&ops[start..last])?;
                start = last;
            }
            last = end;
        }
        if last > start {
            commit(&ops[start..last])?;
        }
        Ok(())
    }

    /// Puts everything written so far on disk. Blocks: never call it on the event loop (see [`Writer`]).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

/// When the writer closes and reopens the database: after `after_changes` changes written, once idle for `idle`.
/// sled keeps much of what it wrote in memory until it is closed (after a first scan of 50,000 cartridges and 50,000
/// `MoveToMediaPool` calls the daemon held 85 MiB with jemalloc, 72 MiB once the writer had reopened it).
#[derive(Debug, Clone, Copy)]
pub struct Reopen {
    /// Changes written since the database was opened.
    pub after_changes: usize,
    /// Time without a batch.
    pub idle: std::time::Duration,
}

impl Reopen {
    /// The daemon's: 20,000 changes, 2 s idle.
    pub const DEFAULT: Reopen = Reopen { after_changes: 20_000, idle: std::time::Duration::from_secs(2) };
}

/// The group-commit writer: a thread that applies and flushes batches off the event loop.
#[derive(Debug)]
pub struct Writer {
    tx: Option<mpsc::Sender<(u64, Vec<Change>)>>,
    durable: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    reopens: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
    next: u64,
}

impl Writer {
    /// Starts the writer. `on_durable` runs on the writer thread after each flush (wake the loop there), and after
    /// it reopened the database ([`Reopen::DEFAULT`]).
    pub fn spawn(store: Store, on_durable: impl Fn() + Send + 'static) -> Writer {
        Writer::spawn_with(store, Reopen::DEFAULT, on_durable)
    }

    /// [`Writer::spawn`] with another [`Reopen`] rule.
    pub fn spawn_with(store: Store, reopen: Reopen, on_durable: impl Fn() + Send + 'static) -> Writer {
        let (tx, rx) = mpsc::channel::<(u64, Vec<Change>)>();
        let durable = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let reopens = Arc::new(AtomicU64::new(0));
        let (d, f, r) = (durable.clone(), failed.clone(), reopens.clone());
        let thread = thread::Builder::new()
            .name("rsmd-writer".into())
            .spawn(move || {
                let mut store = store;
                let mut written = 0usize;
                loop {
                    let (mut seq, mut batch) = match rx.recv_timeout(reopen.idle) {
                        Ok(b) => b,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            if written >= reopen.after_changes {
                                written = 0;
                                match store.reopen() {
                                    Ok(s) => {
                                        store = s;
                                        r.fetch_add(1, Ordering::Release);
                                        on_durable();
                                    }
                                    Err(e) => {
                                        // Nothing can be written any more: the loop sees the failure and stops.
                                        log::error!("reopening the inventory database failed: {e}");
                                        f.store(u64::MAX, Ordering::Release);
                                        on_durable();
                                        return;
                                    }
                                }
                            }
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    };
                    // Group commit: take everything that queued up while the last flush ran.
                    while let Ok((s, more)) = rx.try_recv() {
                        seq = s;
                        batch.extend(more);
                    }
                    log::trace!("writer: batch {seq} with {} changes", batch.len());
                    written = written.saturating_add(batch.len());
                    match store.apply(&batch).and_then(|()| store.flush()) {
                        Ok(()) => d.store(seq, Ordering::Release),
                        Err(e) => {
                            log::error!("writing the inventory failed: {e}");
                            f.store(seq, Ordering::Release);
                        }
                    }
                    on_durable();
                }
            })
            .ok();
        Writer { tx: Some(tx), durable, failed, reopens, thread, next: 0 }
    }

    /// Queues a batch; returns its sequence number. Batches become durable in order.
    pub fn submit(&mut self, changes: Vec<Change>) -> Result<u64, StoreError> {
        self.next += 1;
        let tx = self.tx.as_ref().ok_or(StoreError::WriterGone)?;
        tx.send((self.next, changes)).map_err(|_| StoreError::WriterGone)?;
        Ok(self.next)
    }

    /// The highest batch known to be on disk.
    pub fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// How many times the database was closed and reopened ([`Reopen`]).
    pub fn reopens(&self) -> u64 {
        self.reopens.load(Ordering::Acquire)
    }

    /// The highest batch whose write failed (0: none).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Acquire)
    }

    /// Flushes what is queued and stops the thread.
    pub fn shutdown(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests;
