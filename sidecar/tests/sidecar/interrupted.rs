//! `backup run` stopped by SIGTERM or SIGINT while it dumps: nothing is
//! published and nothing is left behind (no temporary file, no multipart
//! upload, no pg_dump running on).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::{Moto, PG_DUMP_WITH_THE_REAL_VERSION, Sidecar, TestDb, wait_for};

/// Gives the sidecar a pg_dump that reports the real version, then writes a
/// few bytes and hangs (as one waiting for a lock would), recording its pid;
/// returns the file with the pid.
fn use_hanging_pg_dump(sidecar: &mut Sidecar) -> PathBuf {
    let pid_file = sidecar.scratch_dir().join("pg_dump.pid");
    sidecar.use_pg_dump_script(&format!(
        "{PG_DUMP_WITH_THE_REAL_VERSION}echo $$ > {}\nprintf PGDMP\nexec sleep 600\n",
        pid_file.display()
    ));
    pid_file
}

/// Starts `backup run`, waits until pg_dump runs, sends `signal`; returns
/// the exit code, stderr, and pg_dump's pid.
fn interrupt_backup(
    sidecar: &Sidecar,
    pid_file: &Path,
    signal: &str,
) -> (Option<i32>, String, u32) {
    let child = sidecar
        .command(&["backup", "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts backup run");
    let mut child = crate::helpers::ChildGuard(child);
    let pg_dump_pid: u32 = wait_for("pg_dump to start", Duration::from_secs(30), || {
        std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()
    });
    // Let a chunk reach the store first.
    std::thread::sleep(Duration::from_millis(300));

    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &child.0.id().to_string()])
        .status()
        .expect("runs kill");
    assert!(sent.success());

    let status = wait_for("backup run to exit", Duration::from_secs(15), || {
        child.0.try_wait().expect("waits")
    });
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().expect("piped"), &mut stderr)
        .expect("reads stderr");
    (status.code(), stderr, pg_dump_pid)
}

fn assert_gone(pid: u32) {
    wait_for("pg_dump to be killed", Duration::from_secs(10), || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        // Gone, or a zombie waiting for init to reap it.
        (status.is_empty() || status.contains("State:\tZ")).then_some(())
    });
}

#[test]
fn sigterm_during_a_local_backup_removes_the_temporary_file_and_kills_pg_dump() {
    let db = TestDb::create();
    db.seed_small();
    let mut sidecar = Sidecar::local(&db);
    let pid_file = use_hanging_pg_dump(&mut sidecar);

    let (code, stderr, pg_dump) = interrupt_backup(&sidecar, &pid_file, "TERM");

    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("interrupted by SIGTERM"), "{stderr}");
    assert_eq!(sidecar.snapshot_files(), Vec::<String>::new());
    assert_gone(pg_dump);
}

#[test]
fn sigint_during_an_s3_backup_aborts_the_multipart_upload() {
    let moto = Moto::with_bucket("backups");
    let db = TestDb::create();
    db.seed_small();
    let mut sidecar = Sidecar::s3(&db, &moto.endpoint(), "backups");
    let pid_file = use_hanging_pg_dump(&mut sidecar);

    let (code, stderr, pg_dump) = interrupt_backup(&sidecar, &pid_file, "INT");

    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("interrupted by SIGINT"), "{stderr}");
    assert_eq!(moto.pending_uploads("backups"), 0);
    assert_eq!(moto.keys("backups"), Vec::<String>::new());
    assert_gone(pg_dump);
}
