//! A small filesystem of its own for a data dir (a tmpfs or a loop-mounted image), so a
//! test can fill it; and the file and free-space probes that go with it.

use super::*;

/// Files in a directory (names), empty if it does not exist.
pub fn dir_files(dir: &Path) -> BTreeSet<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

/// Runs a command; `Err` with its stderr when it fails.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Bytes available to unprivileged writers on the filesystem holding `path`.
fn available_bytes(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt as _;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path without NUL");
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a valid NUL-terminated string and `stat` a writable statvfs.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    assert_eq!(
        rc,
        0,
        "statvfs {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    stat.f_bavail as u64 * stat.f_frsize as u64
}

/// How the small filesystem was made, and so how it is grown.
#[derive(Debug)]
pub enum SmallFsKind {
    /// `mount -t tmpfs -o size=…`; grown with `remount,size=…`.
    Tmpfs,
    /// A loop-mounted ext4 image; grown by deleting a filler file made inside it.
    Loop { image: PathBuf, filler: PathBuf },
    /// No mount allowed: a filler file takes all but the wanted space of the host filesystem;
    /// grown by deleting the filler.
    Filler { filler: PathBuf },
}

/// A small filesystem mounted at `path` (unmounted, or its filler removed, on drop).
#[derive(Debug)]
pub struct SmallFs {
    /// Where it is mounted (or the directory on the filled filesystem).
    pub path: PathBuf,
    /// How it was made.
    pub kind: SmallFsKind,
    mounted: bool,
}

impl SmallFs {
    /// Mounts a filesystem with about `size_mib` MiB free at `path` (an existing directory):
    /// tmpfs if allowed, else a loop-mounted ext4 image (in `scratch`), else (last resort) a
    /// filler file on the host filesystem. Prints which one and why.
    /// `ENVAULT_DISK_FULL_FS=loop` or `=filler` skips the earlier kinds (to test the fallbacks).
    pub fn mount(path: &Path, size_mib: u64, scratch: &Path) -> SmallFs {
        let size = format!("size={size_mib}m,mode=0700");
        let path_text = path.to_str().expect("utf-8 path");
        let wanted = std::env::var("ENVAULT_DISK_FULL_FS").unwrap_or_default();
        let tmpfs = match wanted.as_str() {
            "loop" | "filler" => Err(format!("ENVAULT_DISK_FULL_FS={wanted}")),
            _ => run("mount", &["-t", "tmpfs", "-o", &size, "tmpfs", path_text]),
        };
        match tmpfs {
            Ok(()) => {
                eprintln!("disk_full: tmpfs of {size_mib} MiB mounted at {path_text}");
                return SmallFs {
                    path: path.to_path_buf(),
                    kind: SmallFsKind::Tmpfs,
                    mounted: true,
                };
            }
            Err(why) => eprintln!("disk_full: cannot mount a tmpfs ({why}); trying a loop mount"),
        }
        // An ext4 image with room to grow: size_mib + 56 MiB, all but size_mib taken by a filler.
        let image = scratch.join("small.img");
        let loop_attempt = (|| -> Result<PathBuf, String> {
            if wanted == "filler" {
                return Err("ENVAULT_DISK_FULL_FS=filler".into());
            }
            let total = format!("{}M", size_mib + 56);
            run("fallocate", &["-l", &total, image.to_str().unwrap()])?;
            run(
                "mkfs.ext4",
                &["-q", "-F", "-m", "0", image.to_str().unwrap()],
            )?;
            run("mount", &["-o", "loop", image.to_str().unwrap(), path_text])?;
            let filler = path.join("filler");
            let free = available_bytes(path);
            let keep = size_mib << 20;
            let filler_len = free.saturating_sub(keep);
            run(
                "fallocate",
                &["-l", &filler_len.to_string(), filler.to_str().unwrap()],
            )?;
            Ok(filler)
        })();
        match loop_attempt {
            Ok(filler) => {
                eprintln!(
                    "disk_full: loop-mounted ext4 at {path_text}, filled to {size_mib} MiB free"
                );
                return SmallFs {
                    path: path.to_path_buf(),
                    kind: SmallFsKind::Loop { image, filler },
                    mounted: true,
                };
            }
            Err(why) => {
                let _ = run("umount", &[path_text]);
                let _ = std::fs::remove_file(&image);
                eprintln!("disk_full: cannot loop-mount ({why}); falling back to a filler file");
            }
        }
        // Last resort: fill the host filesystem. Refuse on a big shared filesystem unless
        // asked: other processes would run out of space too.
        let free = available_bytes(path);
        let keep = size_mib << 20;
        let allowed = std::env::var("ENVAULT_DISK_FULL_FILL_HOST").is_ok_and(|v| v == "1");
        assert!(
            allowed || free < (16u64 << 30),
            "disk_full: no mount permitted here and the host filesystem has {} GiB free; \
             filling it would starve other processes. Run as root (CI does), or set \
             ENVAULT_DISK_FULL_FILL_HOST=1 to fill it anyway.",
            free >> 30
        );
        let filler = path.join("filler");
        let filler_len = free.saturating_sub(keep);
        run(
            "fallocate",
            &["-l", &filler_len.to_string(), filler.to_str().unwrap()],
        )
        .unwrap_or_else(|e| panic!("disk_full: cannot create the filler file: {e}"));
        eprintln!(
            "disk_full: host filesystem filled by {} to {size_mib} MiB free",
            filler.display()
        );
        SmallFs {
            path: path.to_path_buf(),
            kind: SmallFsKind::Filler { filler },
            mounted: false,
        }
    }

    /// Gives the filesystem about `extra_mib` MiB more room.
    pub fn grow(&self, new_size_mib: u64) {
        match &self.kind {
            SmallFsKind::Tmpfs => {
                let option = format!("remount,size={new_size_mib}m");
                run("mount", &["-o", &option, self.path.to_str().unwrap()])
                    .unwrap_or_else(|e| panic!("grow the tmpfs: {e}"));
            }
            SmallFsKind::Loop { filler, .. } | SmallFsKind::Filler { filler } => {
                std::fs::remove_file(filler).unwrap_or_else(|e| panic!("remove the filler: {e}"));
            }
        }
    }

    /// Unmounts now (after the daemon stopped); `Err` if it is still busy.
    pub fn unmount(&mut self) -> Result<(), String> {
        if !self.mounted {
            return Ok(());
        }
        run("umount", &[self.path.to_str().unwrap()])?;
        self.mounted = false;
        Ok(())
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        if let SmallFsKind::Filler { filler } = &self.kind {
            let _ = std::fs::remove_file(filler);
        }
        if self.mounted {
            // Lazy: a daemon still holding files open must not make the unmount fail.
            let path = self.path.to_str().unwrap_or_default().to_string();
            if run("umount", &[&path]).is_err() {
                let _ = run("umount", &["-l", &path]);
            }
        }
        if let SmallFsKind::Loop { image, .. } = &self.kind {
            let _ = std::fs::remove_file(image);
        }
    }
}
