//! Opening the files fanout writes: the `--report` file and every `--capture` segment.
//!
//! Both hold what clients sent or what they were answered, so a file fanout creates is the
//! owner's alone (mode 0600; an existing file keeps the mode it has). A symlink at the last
//! component of the path is never followed (`O_NOFOLLOW`): a link planted where fanout will write
//! cannot redirect it onto another file. Directories further up the path are followed as usual.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Mode of a file fanout creates: read and write for its owner only.
pub(crate) const MODE: u32 = 0o600;

/// Opens `path` for appending, creating it with [`MODE`] if missing (the report file).
pub(crate) fn append(path: &Path) -> io::Result<File> {
    open(path, OpenOptions::new().append(true).create(true))
}

/// Creates `path` with [`MODE`]; fails if anything, a symlink included, is already there (a
/// capture file: an earlier run's is never overwritten).
pub(crate) fn create_new(path: &Path) -> io::Result<File> {
    open(path, OpenOptions::new().write(true).create_new(true))
}

fn open(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    options
        .mode(MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            // O_NOFOLLOW refuses a link with ELOOP; O_EXCL (create_new) with EEXIST.
            Some(libc::ELOOP | libc::EEXIST) if is_symlink(path) => symlink_refused(e.kind()),
            _ => e,
        })
}

/// `Err` naming the reason when `path` is a symbolic link: checked before anything else is
/// decided about a path fanout will write.
pub(crate) fn refuse_symlink(path: &Path) -> io::Result<()> {
    match is_symlink(path) {
        true => Err(symlink_refused(io::ErrorKind::InvalidInput)),
        false => Ok(()),
    }
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

fn symlink_refused(kind: io::ErrorKind) -> io::Error {
    io::Error::new(
        kind,
        "it is a symbolic link, which fanout does not follow for a file it writes \
         (give the link's target instead)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_files_are_the_owners_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (a, c) = (dir.path().join("a"), dir.path().join("c"));
        append(&a).unwrap();
        create_new(&c).unwrap();
        assert_eq!((mode(&a), mode(&c)), (MODE, MODE));
    }

    #[test]
    fn a_symlink_at_the_last_component_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"precious").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        for e in [append(&link).unwrap_err(), create_new(&link).unwrap_err()] {
            assert!(e.to_string().contains("symbolic link"), "{e}");
        }
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    }

    #[test]
    fn append_keeps_what_the_file_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        append(&path).unwrap().write_all(b"one\n").unwrap();
        append(&path).unwrap().write_all(b"two\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one\ntwo\n");
    }
}
