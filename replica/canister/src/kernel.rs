//! What the kernel tells about a memory's pages: which ones a process wrote (`PAGEMAP_SCAN` on
//! `/proc/self/pagemap`, Linux 6.7), and the write tracking of kept memories (userfaultfd
//! write protection in its asynchronous mode), with the structures and ioctl numbers of
//! Linux's interface.
//!
//! The other module of the workspace with `unsafe` (with [`crate::mapped`]): these are
//! ioctls on raw structures. Each block says why it is sound.
#![allow(unsafe_code)]

/// The unit of change: the operating system's page.
pub const PAGE_SIZE: usize = 4096;

pub(crate) fn round_up(n: usize) -> usize {
    n.div_ceil(PAGE_SIZE) * PAGE_SIZE
}

/// Linux's `struct pm_scan_arg` (`PAGEMAP_SCAN`, Linux 6.7).
#[repr(C)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// Linux's `struct page_region`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

/// `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: u64 = (3 << 30) | ((size_of::<PmScanArg>() as u64) << 16) | (0x66 << 8) | 16;
const PAGE_IS_FILE: u64 = 1 << 2;
const PAGE_IS_PRESENT: u64 = 1 << 3;
const PAGE_IS_SWAPPED: u64 = 1 << 4;

/// The pages of `mem` (page-aligned) that are this process's own (present or swapped, and not
/// file pages), asked of the kernel's page map with `PAGEMAP_SCAN` on `pagemap` (an open
/// `/proc/self/pagemap`), which skips untouched ranges whole: `None` where the kernel has no
/// `PAGEMAP_SCAN`.
pub(crate) fn scan_written(pagemap: &std::fs::File, mem: &[u8]) -> Option<Vec<usize>> {
    scan(
        pagemap,
        mem,
        0,
        [
            PAGE_IS_FILE,
            PAGE_IS_FILE,
            PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
            PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
        ],
    )
}

/// `PAGEMAP_SCAN` over `mem` with `flags` and the categories (inverted, mask, any of,
/// returned): the pages that match.
fn scan(
    pagemap: &std::fs::File,
    mem: &[u8],
    flags: u64,
    categories: [u64; 4],
) -> Option<Vec<usize>> {
    use std::os::fd::AsRawFd;
    let start = mem.as_ptr() as u64;
    let end = start + round_up(mem.len()) as u64;
    let mut regions = [PageRegion::default(); 64];
    let mut written = Vec::new();
    let mut from = start;
    while from < end {
        let mut arg = PmScanArg {
            size: size_of::<PmScanArg>() as u64,
            flags,
            start: from,
            end,
            walk_end: 0,
            vec: regions.as_mut_ptr() as u64,
            vec_len: regions.len() as u64,
            max_pages: 0,
            category_inverted: categories[0],
            category_mask: categories[1],
            category_anyof_mask: categories[2],
            return_mask: categories[3],
        };
        // SAFETY: `arg` and `regions` live across the call, `vec_len` is `regions`' length, and
        // the kernel only writes into them; `[start, end)` is `mem`'s own mapping (which
        // `PM_SCAN_WP_MATCHING` write-protects again: protections change, no byte does).
        let n = unsafe {
            libc::ioctl(
                pagemap.as_raw_fd(),
                PAGEMAP_SCAN as libc::c_ulong,
                &mut arg as *mut PmScanArg,
            )
        };
        if n < 0 {
            return None;
        }
        for r in &regions[..n as usize] {
            let first = (r.start - start) as usize / PAGE_SIZE;
            let last = (r.end - start) as usize / PAGE_SIZE;
            written.extend(first..last);
        }
        if arg.walk_end <= from {
            return None;
        }
        from = arg.walk_end;
    }
    Some(written)
}

/// Whether new regions ask for the kernel's write tracking (on unless turned off).
pub(crate) static TRACKING: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(true);

/// Linux's `struct uffdio_api`, `uffdio_range`, `uffdio_register`.
#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

/// `_IOWR(0xAA, nr, size)`: the userfaultfd ioctls.
const fn uffdio(nr: u64, size: usize) -> u64 {
    (3 << 30) | ((size as u64) << 16) | (0xAA << 8) | nr
}

const UFFDIO_API: u64 = uffdio(0x3F, size_of::<UffdioApi>());
const UFFDIO_REGISTER: u64 = uffdio(0x00, size_of::<UffdioRegister>());
const UFFD_API: u64 = 0xAA;
const UFFD_USER_MODE_ONLY: libc::c_long = 1;
const UFFD_FEATURE_WP_HUGETLBFS_SHMEM: u64 = 1 << 12;
const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
const PM_SCAN_WP_MATCHING: u64 = 1;
const PM_SCAN_CHECK_WPASYNC: u64 = 2;
const PAGE_IS_WRITTEN: u64 = 1 << 1;

/// Asks the kernel to track writes to `[start, start + len)` (userfaultfd write protection in
/// its asynchronous mode, Linux 6.7): a write to a protected page unprotects it without any
/// fault reaching us, and [`scan_tracked`] lists the pages written since the last scan, and
/// protects them again. Nothing is protected at first ([`protect`] does it). `None` where the kernel, its configuration or a seccomp filter refuses any
/// step: the region is then found out by [`scan_written`].
pub(crate) fn track(start: usize, len: usize) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let flags = libc::c_long::from(libc::O_CLOEXEC | libc::O_NONBLOCK) | UFFD_USER_MODE_ONLY;
    // SAFETY: the system call takes flags only and returns a new descriptor or an error.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
    let fd = i32::try_from(fd).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: a descriptor the call above just created, owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut api = UffdioApi {
        api: UFFD_API,
        features: UFFD_FEATURE_WP_ASYNC
            | UFFD_FEATURE_WP_UNPOPULATED
            | UFFD_FEATURE_WP_HUGETLBFS_SHMEM,
        ioctls: 0,
    };
    let mut register = UffdioRegister {
        range: UffdioRange {
            start: start as u64,
            len: len as u64,
        },
        mode: UFFDIO_REGISTER_MODE_WP,
        ioctls: 0,
    };
    // SAFETY: each argument is the structure its ioctl reads and writes, alive across the
    // call; the range is this region's own reservation, which only this region maps.
    let ok = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            UFFDIO_API as libc::c_ulong,
            &mut api as *mut UffdioApi,
        ) == 0
            && libc::ioctl(
                fd.as_raw_fd(),
                UFFDIO_REGISTER as libc::c_ulong,
                &mut register as *mut UffdioRegister,
            ) == 0
    };
    ok.then_some(fd)
}

/// The pages of `mem` its region owns and wrote since it was made or last scanned,
/// protecting them again: `None` if `mem` is not tracked (the kernel refuses the whole scan
/// then, before it changes anything) or the scan fails.
pub(crate) fn scan_tracked(pagemap: &std::fs::File, mem: &[u8]) -> Option<Vec<usize>> {
    // Written pages only, asked as the kernel's fast path takes it (no other category looked
    // at for each page): pages the region maps from the file or the zero page were protected
    // when tracking began (see [`protect`]), so they are reported once written.
    scan(
        pagemap,
        mem,
        PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
        [0, PAGE_IS_WRITTEN, 0, PAGE_IS_WRITTEN],
    )
}

/// Write-protects every page of `[start, start + len)`, a tracked range, reporting none
/// (the kernel's fast path for it): pages written later are the ones [`scan_tracked`]
/// reports. Whether the kernel did.
pub(crate) fn protect(start: usize, len: usize) -> bool {
    use std::os::fd::AsRawFd;
    let Some(pagemap) = pagemap() else {
        return false;
    };
    let mut arg = PmScanArg {
        size: size_of::<PmScanArg>() as u64,
        flags: PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
        start: start as u64,
        end: (start + round_up(len)) as u64,
        walk_end: 0,
        vec: 0,
        vec_len: 0,
        max_pages: 0,
        category_inverted: 0,
        category_mask: PAGE_IS_WRITTEN,
        category_anyof_mask: 0,
        return_mask: PAGE_IS_WRITTEN,
    };
    // SAFETY: `arg` lives across the call and asks for no output; the range is a tracked
    // region's own mapping, whose protections change and no byte does.
    let n = unsafe {
        libc::ioctl(
            pagemap.as_raw_fd(),
            PAGEMAP_SCAN as libc::c_ulong,
            &mut arg as *mut PmScanArg,
        )
    };
    n >= 0 && arg.walk_end >= arg.end
}

/// This process's page map (`/proc/self/pagemap`), opened once: `None` if it cannot be read.
pub(crate) fn pagemap() -> Option<&'static std::fs::File> {
    static PAGEMAP: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();
    PAGEMAP
        .get_or_init(|| std::fs::File::open("/proc/self/pagemap").ok())
        .as_ref()
}
