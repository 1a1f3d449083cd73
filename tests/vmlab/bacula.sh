#!/bin/bash
# Issue 14, in vmlab: a real Bacula 9.6 backup and restore through rsmd on the real kernel's /dev/sg and /dev/nst.
#
# Run by tests/vmlab/mod.rs (bacula_backup_and_restore) inside the VM, in the directory the host staged: `rsmd`, `rsm`
# and `bacula/` (Debian bookworm's bacula-director, -sqlite3, -sd, -fd, -console and sqlite3, unpacked with
# `dpkg-deb -x` into bacula/root, and the shared libraries they need that the VM lacks in bacula/lib).
#
# Two storage daemons share one library through rsmd, each in its own partition (`rsmd:vmlab/bacula`: slots 1-8,
# drives 0 and 1; `rsmd:vmlab/second`: slots 9-16, drives 2 and 3), both with Changer Command = "rsm changer ...":
# `label barcodes` and `update slots` in each, two Full backups running at once (their loads interleave in rsmd's
# queue), then a restore of the first through its other drive, compared byte for byte with the original files.
# Each step that holds prints `VMBACULA-OK <item>`; the host test checks them all.
set -u
H=$(pwd)
B=/tmp/bacula
rm -rf "$B"
mkdir -p "$B"/work "$B"/run "$B"/restore "$B"/data/sub "$B"/rsmd
export LD_LIBRARY_PATH="$H/bacula/root/usr/lib/bacula:$H/bacula/root/lib/x86_64-linux-gnu:$H/bacula/root/usr/lib/x86_64-linux-gnu:$H/bacula/lib"
SBIN="$H/bacula/root/usr/sbin"
export RSMD_SOCKET="$B/rsmd/rsmd.sock"
echo "VMBACULA-BEGIN"

dump() {
  echo "----- bacula log"; cat "$B/work/log" 2>/dev/null
  echo "----- rsmd log"; tail -n 80 "$B/rsmd.log" 2>/dev/null
  echo "----- rsm status"; "$H/rsm" status 2>&1
}
fail() { echo "VMBACULA-FAIL: $*"; dump; exit 1; }
ok() { echo "VMBACULA-OK $*"; }

# tgt's fresh tapes do not read as blank (no BLANK CHECK: a READ returns tgt's own header and stale buffer bytes, in
# which Bacula found a label it had written on another tape). Give the tapes to be labelled the zeroed first block a
# blank tape reads as, with the real mtx, before rsmd starts.
for s in 1 2 3 9 10; do
  mtx -f "$CHANGER" load $s 0 >/dev/null || fail "mtx load $s 0"
  mt-st -f /dev/nst0 rewind && head -c 65536 /dev/zero | dd of=/dev/nst0 bs=65536 2>/dev/null && mt-st -f /dev/nst0 weof ||
    fail "cannot blank the tape of slot $s"
  mtx -f "$CHANGER" unload $s 0 >/dev/null || fail "mtx unload $s 0"
done

# rsmd on the VM's changer, with two partitions.
cat >"$B/rsmd.toml" <<EOF
socket = "$B/rsmd/rsmd.sock"
state_dir = "$B/rsmd/state"

[[library]]
name = "vmlab"
changer = "$CHANGER"

[[library.partition]]
name = "bacula"
application = "bacula"
slots = "1-8"
drives = [0, 1]

[[library.partition]]
name = "second"
application = "second"
slots = "9-16"
drives = [2, 3]
EOF
"$H/rsmd" --config "$B/rsmd.toml" >"$B/rsmd.log" 2>&1 &
"$H/rsm" --wait 60 status >"$B/status.txt" 2>&1 || fail "rsmd did not come up: $(cat "$B/status.txt")"
# rsmd is ready once its inventory is loaded; the library's first scan follows.
for i in $(seq 1 300); do
  "$H/rsm" status >"$B/status.txt" 2>&1 && grep -q "ready" "$B/status.txt" && grep -q "/dev/nst" "$B/status.txt" && break
  [ "$i" = 300 ] && fail "the library did not come up: $(cat "$B/status.txt")"
  sleep 0.1
done
cat "$B/status.txt"
# The tape device of each library drive, from rsm status's Drives table (# STATE MEDIA FROM TAPE ...).
tape_of() { awk -v d="$1" '/^Drives:/ {on=1; next} /^$/ {on=0} on && $1 == d {print $5}' "$B/status.txt"; }
for d in 0 1 2 3; do
  t=$(tape_of $d)
  [ -c "$t" ] || fail "drive $d has no tape device in rsm status ($t)"
  eval "TAPE$d=$t"
done
ok "rsmd"

# The catalog: Debian's make_sqlite3_tables with its placeholders filled in.
sed -e "s|XXX_DBNAME_XXX|bacula|" -e "s|cd /var/lib/bacula|cd $B/work|" -e "s|bindir=/usr/bin|bindir=$H/bacula/root/usr/bin|" \
  "$H/bacula/root/usr/share/bacula-director/make_sqlite3_tables" >"$B/make_tables"
bash "$B/make_tables" >"$B/make_tables.out" 2>&1 || fail "make_sqlite3_tables: $(cat "$B/make_tables.out")"

# What the backups save: files of several sizes, binary and text.
head -c 3000000 /dev/urandom >"$B/data/random.bin"
head -c 70000 /dev/urandom >"$B/data/sub/small.bin"
cp "$SBIN/bacula-sd" "$B/data/sub/"
seq 1 20000 >"$B/data/numbers.txt"
mkdir -p "$B/data2"
head -c 2000000 /dev/urandom >"$B/data2/second.bin"

tape_device() { # NAME INDEX ARCHIVE_DEVICE
  cat <<EOF
Device {
  Name = $1
  Drive Index = $2
  Media Type = LTO-6
  Archive Device = $3
  AutoChanger = yes
  AutomaticMount = yes
  AlwaysOpen = yes
  RemovableMedia = yes
  RandomAccess = no
  Maximum Changer Wait = 120
}
EOF
}
storage_pair() { # NAME PORT PARTITION APPLICATION TAPE_A TAPE_B
  cat <<EOF
Storage {
  Name = $1-sd
  SDPort = $2
  SDAddress = 127.0.0.1
  WorkingDirectory = "$B/work"
  Pid Directory = "$B/run"
  Plugin Directory = "$H/bacula/root/usr/lib/bacula"
  Maximum Concurrent Jobs = 20
}
Director {
  Name = vm-dir
  Password = "sd-secret"
}
Autochanger {
  Name = $1-changer
  Device = $1-drive0, $1-drive1
  Changer Command = "$H/rsm --application $4 changer %c %o %S %a %d"
  Changer Device = rsmd:vmlab/$3
}
$(tape_device "$1-drive0" 0 "$5")
$(tape_device "$1-drive1" 1 "$6")
Messages {
  Name = Standard
  director = vm-dir = all
}
EOF
}
storage_pair first 9103 bacula bacula "$TAPE0" "$TAPE1" >"$B/sd1.conf"
storage_pair second 9104 second second "$TAPE2" "$TAPE3" >"$B/sd2.conf"

cat >"$B/fd.conf" <<EOF
FileDaemon {
  Name = vm-fd
  FDport = 9102
  FDAddress = 127.0.0.1
  WorkingDirectory = "$B/work"
  Pid Directory = "$B/run"
  Plugin Directory = "$H/bacula/root/usr/lib/bacula"
  Maximum Concurrent Jobs = 20
}
Director {
  Name = vm-dir
  Password = "fd-secret"
}
Messages {
  Name = Standard
  director = vm-dir = all, !skipped, !restored
}
EOF

dir_storage() { # NAME PORT
  cat <<EOF
Storage {
  Name = $1
  Address = 127.0.0.1
  SDPort = $2
  Password = "sd-secret"
  Device = $1-changer
  Media Type = LTO-6
  Autochanger = yes
  Maximum Concurrent Jobs = 10
}
Pool {
  Name = $1-pool
  Pool Type = Backup
  Recycle = yes
  AutoPrune = yes
  Volume Retention = 365 days
  Storage = $1
}
EOF
}
dir_job() { # NAME STORAGE DIRECTORY
  cat <<EOF
FileSet {
  Name = $1-set
  Include {
    Options {
      signature = MD5
    }
    File = $3
  }
}
Job {
  Name = $1
  Type = Backup
  Level = Full
  Client = vm-fd
  FileSet = $1-set
  Storage = $2
  Pool = $2-pool
  Messages = Standard
  Write Bootstrap = "$B/work/%n.bsr"
}
EOF
}
{
  cat <<EOF
Director {
  Name = vm-dir
  DIRport = 9101
  DirAddress = 127.0.0.1
  QueryFile = "$H/bacula/root/etc/bacula/scripts/query.sql"
  WorkingDirectory = "$B/work"
  PidDirectory = "$B/run"
  Maximum Concurrent Jobs = 10
  Password = "dir-secret"
  Messages = Daemon
}
Catalog {
  Name = cat
  dbname = "bacula"; dbuser = ""; dbpassword = ""
}
Client {
  Name = vm-fd
  Address = 127.0.0.1
  FDPort = 9102
  Catalog = cat
  Password = "fd-secret"
  Maximum Concurrent Jobs = 10
}
Job {
  Name = restore
  Type = Restore
  Client = vm-fd
  FileSet = backup1-set
  Storage = first
  Pool = first-pool
  Messages = Standard
  Where = $B/restore
}
Pool {
  Name = Default
  Pool Type = Backup
}
Messages {
  Name = Standard
  console = all, !skipped, !saved
  append = "$B/work/log" = all, !skipped, !saved
  catalog = all
}
Messages {
  Name = Daemon
  console = all, !skipped, !saved
  append = "$B/work/log" = all, !skipped
}
EOF
  dir_storage first 9103
  dir_storage second 9104
  dir_job backup1 first "$B/data"
  dir_job backup2 second "$B/data2"
} >"$B/dir.conf"
cat >"$B/bconsole.conf" <<EOF
Director {
  Name = vm-dir
  DIRport = 9101
  address = 127.0.0.1
  Password = "dir-secret"
}
EOF

for c in "bacula-fd fd" "bacula-sd sd1" "bacula-sd sd2" "bacula-dir dir"; do
  set -- $c
  "$SBIN/$1" -t -c "$B/$2.conf" >"$B/$2.check" 2>&1 || fail "$1 -t -c $2.conf: $(cat "$B/$2.check")"
done
"$SBIN/bacula-fd" -f -c "$B/fd.conf" >"$B/fd.out" 2>&1 &
"$SBIN/bacula-sd" -f -c "$B/sd1.conf" >"$B/sd1.out" 2>&1 &
"$SBIN/bacula-sd" -f -c "$B/sd2.conf" >"$B/sd2.out" 2>&1 &
"$SBIN/bacula-dir" -f -c "$B/dir.conf" >"$B/dir.out" 2>&1 &

console() { # runs bconsole with the commands on stdin, prints and keeps its output
  timeout 600 "$SBIN/bconsole" -n -c "$B/bconsole.conf" >"$B/console.out" 2>&1
  cat "$B/console.out"
}
for i in $(seq 1 100); do
  echo "status dir" | timeout 20 "$SBIN/bconsole" -n -c "$B/bconsole.conf" >/dev/null 2>&1 && break
  [ "$i" = 100 ] && fail "the director does not answer"
  sleep 0.2
done
ok "daemons"

# Both storage daemons label their cartridges at the same time (two consoles): their loads interleave in rsmd's
# queue, each through its own partition.
label() { # STORAGE SLOTS
  printf 'label barcodes storage=%s pool=%s-pool slots=%s drive=0\nyes\n' "$1" "$1" "$2" |
    timeout 600 "$SBIN/bconsole" -n -c "$B/bconsole.conf" >"$B/label-$1.out" 2>&1
}
label first 1-3 &
one=$!
label second 1-2 &
wait $one $!
cat "$B/label-first.out" "$B/label-second.out"
console <<EOF
update slots storage=first drive=0
update slots storage=second drive=0
list volumes
EOF
for v in ABC001L6 ABC002L6 ABC003L6 ABC009L6 ABC010L6; do
  grep -Eq "\| $v +\| Append " "$B/console.out" || fail "volume $v not labelled"
done
grep "audit: mount request" "$B/rsmd.log" | sed -n 's/.* by \([a-z]*\) .*/\1/p' | tr '\n' ' ' >"$B/order"
echo "mount order: $(cat "$B/order")"
grep -Eq "second .*bacula|bacula .*second .*bacula" "$B/order" || fail "the two labellings did not interleave"
ok "label-barcodes"

# Two Full backups at once, one per storage daemon, each loading its cartridge through rsmd: the drives are emptied
# first (unmount unloads the cartridge labelled last through rsm changer).
console <<EOF2
unmount storage=first drive=0
unmount storage=second drive=0
EOF2
before=$(grep -c "audit: mount request" "$B/rsmd.log")
console <<EOF2
run job=backup1 yes
run job=backup2 yes
wait
messages
list jobs
EOF2
for j in backup1 backup2; do
  grep -Eq "\| $j +\|.*\| T +\|" "$B/console.out" || fail "job $j did not terminate normally"
done
[ "$(grep "audit: mount request" "$B/rsmd.log" | tail -n +$((before + 1)) | grep -c "by \(bacula\|second\) ")" -ge 2 ] ||
  fail "the backups did not load their cartridges through rsmd"
ok "backups"

# Each application moved only its own partition's cartridges (rsmd's audit lines name the application and cartridge).
grep "audit: mount request" "$B/rsmd.log"
grep "audit: mount request.* by bacula " "$B/rsmd.log" | grep -qv "cartridge ABC00[1-8]L6" &&
  fail "bacula mounted a cartridge outside its partition"
grep "audit: mount request.* by second " "$B/rsmd.log" | grep -Eqv "cartridge ABC0(09|1[0-6])L6" &&
  fail "second mounted a cartridge outside its partition"
grep -q "audit: mount request.* by second .*drive [23] " "$B/rsmd.log" || fail "no mount by the second storage daemon"
"$H/rsm" --application second changer rsmd:vmlab/second list >"$B/list2" 2>&1 || fail "rsm changer list: $(cat "$B/list2")"
cat "$B/list2"
grep -q "ABC00[1-8]L6" "$B/list2" && fail "the second partition lists the first's cartridges"
grep -q "ABC009L6" "$B/list2" || fail "the second partition does not list its own cartridge ABC009L6"
ok "partitions"

# The restore reads the backup through the first storage daemon's other drive: drive 0 is unmounted (Bacula unloads
# the cartridge to its slot through rsm changer) and stays blocked, so the restore loads it into drive 1.
console <<EOF2
unmount storage=first drive=0
status storage=first
EOF2
"$H/rsm" status
console <<EOF2
restore jobid=1 where=$B/restore all done yes
wait
messages
status storage=first
EOF2
grep -Eq "Termination: +Restore OK" "$B/console.out" || fail "the restore did not end Restore OK"
grep -q "by bacula .*drive 1 " "$B/rsmd.log" || fail "the restore did not use drive 1"
ok "restore"

(cd "$B/data" && find . -type f | sort | xargs md5sum) >"$B/orig.md5"
(cd "$B/restore$B/data" && find . -type f | sort | xargs md5sum) >"$B/restored.md5"
cat "$B/restored.md5"
cmp "$B/orig.md5" "$B/restored.md5" || fail "the restored files differ from the originals"
[ "$(wc -l <"$B/orig.md5")" -ge 4 ] || fail "too few files compared"
ok "byte-identical"
