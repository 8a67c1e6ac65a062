//! Atomic writes: every file goes through a temporary file in its directory and a rename, so a
//! reader sees the old file or the whole new one; stray temporary files of dead writers are
//! removed, and an output directory is probed before any compute.

use anyhow::Context;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so a
/// reader (or a resumed sweep) sees the old file or the whole new one. On any error the
/// temporary file is removed and `path` is left as it was.
///
/// Test hook: `RANKCOLLAPSE_TEST_FAIL_WRITE=<file name>` sends the bytes for that file to
/// `/dev/full` instead of its temporary file, so the write fails with the operating system's
/// own "no space left on device" on this code path.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = dir.join(temp_name(name));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let written = (|| -> anyhow::Result<()> {
        let mut file = file;
        if std::env::var(FAIL_WRITE_HOOK).is_ok_and(|v| v == name) {
            file = std::fs::OpenOptions::new().write(true).open("/dev/full")?;
        }
        file.write_all(bytes).with_context(|| format!("writing {}", tmp.display()))?;
        file.sync_all().with_context(|| format!("writing {}", tmp.display()))?;
        drop(file);
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// The test hook of [`write_atomic`].
pub const FAIL_WRITE_HOOK: &str = "RANKCOLLAPSE_TEST_FAIL_WRITE";

/// What marks a temporary file of [`write_atomic`]: `.<name>.tmp-<host>-<pid>-<n>`.
const TEMP_MARKER: &str = ".tmp-";

/// A temporary name unique among the processes of all hosts that share a directory (host, pid
/// and a counter); `create_new` refuses a clash all the same.
fn temp_name(target: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(".{target}{TEMP_MARKER}{}-{}-{n}", host(), std::process::id())
}

/// This host's name as file names may carry it ("" where the system does not say).
fn host() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '_' { c } else { '_' })
            .collect()
    })
}

/// Removes the temporary files of [`write_atomic`] in `dir` that no live process is writing:
/// those of a process of this host that no longer exists (ended by SIGKILL or a second signal),
/// and any last modified more than `older_than` ago (another host's, whose process this host
/// cannot see). Returns what it removed.
pub fn remove_stale_temps(dir: &Path, older_than: std::time::Duration) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let (now, here, me) = (std::time::SystemTime::now(), host(), std::process::id().to_string());
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(tag) = name.strip_prefix('.').and_then(|n| n.rsplit_once(TEMP_MARKER)).map(|(_, t)| t)
        else {
            continue;
        };
        // tag = <host>-<pid>-<n>; the host may itself hold '-' only as '_'.
        let mut fields = tag.rsplitn(3, '-');
        let (_n, pid, from) = (fields.next(), fields.next().unwrap_or(""), fields.next().unwrap_or(""));
        let dead_here = !here.is_empty()
            && from == here
            && pid != me
            && !pid.is_empty()
            && !Path::new("/proc").join(pid).exists();
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).is_ok_and(|age| age > older_than));
        if (dead_here || old) && std::fs::remove_file(e.path()).is_ok() {
            removed.push(e.path());
        }
    }
    removed
}

/// Creates `dir` if needed and checks that a file can be created, written, synced and removed
/// there, so an unwritable or full output directory is an error before any compute. The error
/// names the directory and carries the operating system's error.
pub fn probe_output_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("output directory {} cannot be created", dir.display()))?;
    let probe = dir.join(temp_name("write-probe"));
    let written = std::fs::OpenOptions::new().write(true).create_new(true).open(&probe).and_then(|mut f| {
        let r = f.write_all(b"rankcollapse write probe\n").and_then(|_| f.sync_all());
        drop(f);
        let removed = std::fs::remove_file(&probe);
        r.and(removed)
    });
    written.with_context(|| format!("output directory {} is not writable", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stray_temporary_files_of_dead_writers_on_this_host_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join(format!(".a.json{TEMP_MARKER}{}-4294967295-0", host()));
        let mine = dir.path().join(temp_name("b.json"));
        let elsewhere = dir.path().join(format!(".c.json{TEMP_MARKER}otherhost-1-0"));
        let unrelated = dir.path().join(".hidden");
        for p in [&dead, &mine, &elsewhere, &unrelated] {
            std::fs::write(p, b"").unwrap();
        }
        let removed = remove_stale_temps(dir.path(), std::time::Duration::from_secs(3600));
        assert_eq!(removed, vec![dead.clone()]);
        assert!(mine.exists() && elsewhere.exists() && unrelated.exists());
        // Past the age limit, any writer's temporary file goes (not other files).
        let removed = remove_stale_temps(dir.path(), std::time::Duration::ZERO);
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert!(unrelated.exists());
    }

    #[test]
    fn a_failed_atomic_write_leaves_the_old_file_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.txt");
        write_atomic(&path, b"old").unwrap();
        // A target inside a missing directory fails at creation; a directory in the way of the
        // rename fails after the bytes are written.
        assert!(write_atomic(&dir.path().join("missing/f.txt"), b"x").is_err());
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/inside"), b"").unwrap();
        let err = write_atomic(&dir.path().join("d"), b"new").unwrap_err();
        assert!(format!("{err:#}").contains("renaming"), "{err:#}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.contains(TEMP_MARKER)), "{names:?}");
    }
}
