//! What start-up leaves resident that an idle server does not need.
//!
//! Start-up runs code and frees memory that serving never touches again: every plugin's
//! migrations and OpenAPI paths, a new admin's argon2 hash (19 MiB), the configuration's
//! parsing. Left alone, both stay in the process's resident set for good: mimalloc gives freed
//! memory back to the OS only during later allocator activity, which an idle server does not
//! have, and the kernel maps up to 64 KiB of cached file around every page of code that runs
//! (fault-around), so start-up alone leaves ~30 MiB of the binary mapped.
#![allow(unsafe_code)]

use std::ffi::c_long;

use libmimalloc_sys as mi;

/// `mi_option_purge_delay`: its place in `mi_option_e` of the mimalloc that the pinned
/// `libmimalloc-sys` builds (v3), which names no constant for it.
const PURGE_DELAY: mi::mi_option_t = 15;

/// While alive, mimalloc hands every freed page back to the OS at once; see [`StartUp::done`].
pub struct StartUp {
    purge_delay: c_long,
}

/// Start of start-up.
pub fn start_up() -> StartUp {
    // SAFETY: reading and setting an option have no preconditions; mimalloc reads options on
    // every purge decision, so the change takes effect at once on every thread.
    let purge_delay = unsafe {
        let before = mi::mi_option_get(PURGE_DELAY);
        mi::mi_option_set(PURGE_DELAY, 0);
        before
    };
    StartUp { purge_delay }
}

impl StartUp {
    /// Start-up is over: mimalloc goes back to its delay (purging at once costs a system call
    /// per freed page under load), and the binary's start-up code is unmapped.
    pub fn done(self) {
        // SAFETY: as in `start_up`; `mi_collect` walks mimalloc's own heaps and arenas and
        // may run on any thread at any time.
        unsafe {
            mi::mi_option_set(PURGE_DELAY, self.purge_delay);
            mi::mi_collect(true);
        }
        let unmapped = unmap_clean_code();
        tracing::debug!(unmapped_kib = unmapped / 1024, "start-up memory returned");
    }
}

/// Drops this process's mappings of the pages of its own executable that hold only the file's
/// contents (code and read-only data), and answers how many bytes were resident there. The
/// pages stay in the page cache; what runs again maps them back with a minor fault. A mapping
/// that is writable or holds a single private copy (the relocated `.data.rel.ro`, whose
/// contents differ from the file's) is left alone: dropping it would bring back the file's
/// unrelocated bytes.
fn unmap_clean_code() -> usize {
    let (Ok(exe), Ok(smaps)) = (std::fs::read_link("/proc/self/exe"), std::fs::read_to_string("/proc/self/smaps"))
    else {
        return 0;
    };
    let Some(exe) = exe.to_str() else { return 0 };
    let mut unmapped = 0;
    for m in mappings(&smaps).filter(|m| m.droppable(exe)) {
        // SAFETY: the range is a whole mapping of this process that no one can write (its
        // permissions) and that holds no private page (`Anonymous: 0 kB`, and with no write
        // permission none can appear): MADV_DONTNEED only drops page-table entries that the
        // next access re-creates from the unchanged file, so no byte any code sees changes.
        let rc = unsafe { libc::madvise(m.start as *mut libc::c_void, m.end - m.start, libc::MADV_DONTNEED) };
        if rc == 0 {
            unmapped += m.rss_kib.unwrap_or(0) * 1024;
        }
    }
    unmapped
}

/// One mapping of `/proc/self/smaps`, with the fields read here.
#[derive(Debug, PartialEq)]
struct Mapping<'a> {
    start: usize,
    end: usize,
    perms: &'a str,
    path: &'a str,
    rss_kib: Option<usize>,
    anonymous_kib: Option<usize>,
}

impl Mapping<'_> {
    /// A read-only private mapping of `exe` with no page of its own.
    fn droppable(&self, exe: &str) -> bool {
        let read_only_private = matches!(self.perms.as_bytes(), [b'r', b'-', _, b'p']);
        self.path == exe && read_only_private && self.anonymous_kib == Some(0)
    }
}

/// The mappings of an smaps text: a header line (`start-end perms offset dev inode path`) then
/// `Key: value kB` lines.
fn mappings(smaps: &str) -> impl Iterator<Item = Mapping<'_>> {
    let mut out = Vec::new();
    for line in smaps.lines() {
        if let Some(m) = header(line) {
            out.push(m);
        } else if let (Some(m), Some((key, value))) = (out.last_mut(), line.split_once(':')) {
            let kib = value.trim().strip_suffix("kB").and_then(|v| v.trim().parse().ok());
            match key {
                "Rss" => m.rss_kib = kib,
                "Anonymous" => m.anonymous_kib = kib,
                _ => {}
            }
        }
    }
    out.into_iter()
}

fn header(line: &str) -> Option<Mapping<'_>> {
    let mut parts = line.splitn(6, ' ');
    let (range, perms) = (parts.next()?, parts.next()?);
    let (start, end) = range.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let (_offset, _dev, _inode) = (parts.next()?, parts.next()?, parts.next()?);
    let path = parts.next().map_or("", str::trim_start);
    Some(Mapping { start, end, perms, path, rss_kib: None, anonymous_kib: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c1000000 r--p 00000000 fe:00 5312462                    /opt/nexus/bin/nexus
Size:              16384 kB
Rss:                3676 kB
Anonymous:             0 kB
55d0c1000000-55d0c2000000 r-xp 01000000 fe:00 5312462                    /opt/nexus/bin/nexus
Rss:               29968 kB
Anonymous:             0 kB
55d0c2000000-55d0c2100000 r--p 02000000 fe:00 5312462                    /opt/nexus/bin/nexus
Rss:                1380 kB
Anonymous:          1380 kB
7fe508000000-7fe5080b9000 rw-p 00000000 00:00 0 
Rss:                 740 kB
Anonymous:           740 kB
";

    #[test]
    fn only_clean_read_only_mappings_of_the_binary_are_chosen() {
        let all: Vec<_> = mappings(SMAPS).collect();
        assert_eq!(all.len(), 4);
        assert_eq!(all[3].path, "");
        let chosen: Vec<_> =
            all.iter().filter(|m| m.droppable("/opt/nexus/bin/nexus")).map(|m| (m.start, m.rss_kib)).collect();
        assert_eq!(chosen, vec![(0x55d0c0000000, Some(3676)), (0x55d0c1000000, Some(29968))]);
    }
}
