//! Partition locks: one process at a time owns a partition's file.
//!
//! A consumer takes `partition-N.lock` in the state folder, an OS advisory lock (flock), before
//! it loads the partition's file, and lets go only after its last save, so the file never has
//! two writers: not two `weather consume 0` on one folder, and not a group member that stalled
//! past its session next to the partition's new owner. The lock file's text says who holds it
//! (pid, host, command, since when), so a process that finds it taken can name the holder.
//!
//! The kernel drops the lock when its holder dies, however it dies, so a crash never leaves a
//! partition locked; a holder that lets go also removes the file, so a folder at rest holds
//! only partition files. A lock file left by a crash is unlocked and simply taken over.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{FlockOperation, flock};
use tracing::info;

use crate::shutdown::Shutdown;

/// How often a process waiting for a lock tries again. It polls rather than blocks in flock,
/// so that it can stop waiting when the partition is taken away from it meanwhile.
const POLL: Duration = Duration::from_millis(50);
/// Opens of a lock file that its holder removed under us, in a row, before giving up.
const REOPENS: u32 = 100;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "partition {partition} is being consumed by {holder} (it holds {path}): one process at a time may write a partition's file; stop that one first, or give this one its own --state-dir"
    )]
    Held {
        partition: i32,
        path: PathBuf,
        holder: String,
    },
    #[error(
        "partition {partition} is still held by {holder} after waiting {waited:.0?} ({path}): a group member that lost the partition lets go within seconds, so that one is stalled or is not a member of this group (a `weather consume` given a partition list); stop it, then start this member again"
    )]
    StillHeld {
        partition: i32,
        path: PathBuf,
        holder: String,
        waited: Duration,
    },
    #[error("cannot lock {path}: {source}; check that the state folder exists and is writable")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// An exclusive hold on one partition's file; dropping it lets go.
#[derive(Debug)]
pub struct PartitionLock {
    file: File,
    path: PathBuf,
    dir: PathBuf,
    partition: i32,
}

/// What one try at a lock found.
enum Attempt {
    Taken(PartitionLock),
    /// Someone else holds it; who, as its file says.
    Held(String),
}

impl PartitionLock {
    /// Takes partition `partition`'s lock in `dir` now, or fails naming the holder.
    /// `owner` says what we are (`weather consume 0 2`), for whoever finds the lock taken.
    pub fn acquire(dir: &Path, partition: i32, owner: &str) -> Result<Self, LockError> {
        match Self::attempt(dir, partition, owner)? {
            Attempt::Taken(lock) => Ok(lock),
            Attempt::Held(holder) => Err(LockError::Held {
                partition,
                path: lock_path(dir, partition),
                holder,
            }),
        }
    }

    /// Takes the lock, waiting up to `limit` for its holder to let go: a partition's previous
    /// owner may still be finishing its last save. Says so in one line if it has to wait.
    /// `None` when `stop` fires first.
    pub async fn acquire_waiting(
        dir: &Path,
        partition: i32,
        owner: &str,
        limit: Duration,
        stop: &Shutdown,
    ) -> Result<Option<Self>, LockError> {
        let started = Instant::now();
        let mut waiting_for = None;
        loop {
            let holder = match Self::attempt(dir, partition, owner)? {
                Attempt::Taken(lock) => {
                    if let Some(holder) = waiting_for {
                        info!(
                            "partition {partition}: taking over from {holder} after {:.1?}",
                            started.elapsed()
                        );
                    }
                    return Ok(Some(lock));
                }
                Attempt::Held(holder) => holder,
            };
            let waited = started.elapsed();
            if waited >= limit {
                return Err(LockError::StillHeld {
                    partition,
                    path: lock_path(dir, partition),
                    holder,
                    waited,
                });
            }
            if waiting_for.is_none() {
                info!(
                    "partition {partition}: waiting for {holder} to let go of it (it may be finishing its last save)"
                );
                waiting_for = Some(holder);
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.requested() => return Ok(None),
            }
        }
    }

    fn attempt(dir: &Path, partition: i32, owner: &str) -> Result<Attempt, LockError> {
        let path = lock_path(dir, partition);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        for _ in 0..REOPENS {
            let mut file = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io)?;
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                    return Ok(Attempt::Held(holder(&mut file)));
                }
                Err(e) => return Err(io(e.into())),
            }
            // A holder removes the file as it lets go. If it did so between our open and our
            // flock, we hold a file that nobody else will open: try the one at the path now.
            if !same_file(&file, &path).map_err(io)? {
                continue;
            }
            file.set_len(0).map_err(io)?;
            file.write_all(format!("{}\n", describe(owner)).as_bytes())
                .map_err(io)?;
            return Ok(Attempt::Taken(PartitionLock {
                file,
                path,
                dir: dir.to_path_buf(),
                partition,
            }));
        }
        Err(io(std::io::Error::other(
            "its holders kept removing it as we opened it",
        )))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PartitionLock {
    /// Removes the file while still holding it; closing it then lets go. Whoever opened the
    /// file meanwhile finds, once it gets the lock, that it is gone, and opens a new one.
    fn drop(&mut self) {
        if same_file(&self.file, &self.path).unwrap_or(false) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Whether `path` still names the open `file`.
fn same_file(file: &File, path: &Path) -> std::io::Result<bool> {
    let ours = file.metadata()?;
    match fs::metadata(path) {
        Ok(there) => Ok((there.dev(), there.ino()) == (ours.dev(), ours.ino())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn lock_path(dir: &Path, partition: i32) -> PathBuf {
    dir.join(format!("partition-{partition}.lock"))
}

/// This process, as its lock files name it:
/// `pid 4242 on build-1 (weather consume 0 2) since 2026-11-25 10:00:03 UTC`.
fn describe(owner: &str) -> String {
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let since = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
        ))
        .unwrap_or_default();
    format!(
        "pid {} on {host} ({owner}) since {since}",
        std::process::id()
    )
}

/// Who holds a lock, from the first line of its file, made safe for a one-line message.
fn holder(file: &mut File) -> String {
    let mut bytes = Vec::new();
    let _ = file.take(512).read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let line: String = text
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    if line.is_empty() {
        "another process (it has not said which yet)".into()
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_is_told_who_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let first = PartitionLock::acquire(dir.path(), 3, "weather consume 3").unwrap();
        let text = fs::read_to_string(dir.path().join("partition-3.lock")).unwrap();
        let me = format!("pid {} on ", std::process::id());
        assert!(
            text.starts_with(&me) && text.contains("(weather consume 3) since "),
            "{text}"
        );
        // flock is per open file, so a second open in this same process is refused too.
        let err = PartitionLock::acquire(dir.path(), 3, "another").unwrap_err();
        let line = err.to_string();
        assert!(matches!(err, LockError::Held { .. }), "{line}");
        assert!(
            line.contains(&me) && line.contains("partition-3.lock") && !line.contains('\n'),
            "{line}"
        );
        // Other partitions are free.
        let other = PartitionLock::acquire(dir.path(), 1, "weather consume 1").unwrap();
        drop(other);
        drop(first);
        assert!(!dir.path().join("partition-3.lock").exists());
        assert!(!dir.path().join("partition-1.lock").exists());
        PartitionLock::acquire(dir.path(), 3, "again").unwrap();
    }

    #[test]
    fn a_lock_file_left_by_a_crash_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partition-0.lock");
        fs::write(
            &path,
            "pid 1 on elsewhere (weather consume 0) since long ago\n",
        )
        .unwrap();
        let lock = PartitionLock::acquire(dir.path(), 0, "weather consume 0").unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(&format!("pid {} ", std::process::id())));
        assert_eq!(text.lines().count(), 1, "{text}");
        assert_eq!(lock.path(), path);
    }

    #[tokio::test]
    async fn a_waiter_takes_over_when_the_holder_lets_go_or_gives_up_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let (_trigger, stop) = Shutdown::new();
        let held = PartitionLock::acquire(dir.path(), 2, "weather consume 2").unwrap();
        let letting_go = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            drop(held);
        });
        let started = Instant::now();
        let lock =
            PartitionLock::acquire_waiting(dir.path(), 2, "member", Duration::from_secs(30), &stop)
                .await
                .unwrap();
        assert!(lock.is_some() && started.elapsed() >= Duration::from_millis(200));
        letting_go.await.unwrap();

        let err = PartitionLock::acquire_waiting(
            dir.path(),
            2,
            "member",
            Duration::from_millis(150),
            &stop,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, LockError::StillHeld { .. }), "{err}");
        assert!(err.to_string().contains("(member) since"), "{err}");
    }

    #[tokio::test]
    async fn a_waiter_stops_waiting_when_told_to() {
        let dir = tempfile::tempdir().unwrap();
        let (trigger, stop) = Shutdown::new();
        let _held = PartitionLock::acquire(dir.path(), 0, "weather consume 0").unwrap();
        trigger.trigger();
        let waited =
            PartitionLock::acquire_waiting(dir.path(), 0, "m", Duration::from_secs(30), &stop)
                .await
                .unwrap();
        assert!(waited.is_none());
    }
}
