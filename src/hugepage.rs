//! Large tables in memory backed by huge pages where the kernel allows it. Tables read at
//! random (a build's guide codes, `crate::hnsw`): a graph insertion at 1M rows touches a few
//! thousand codes scattered over hundreds of megabytes, and with 4 KB pages nearly every one
//! is also a TLB miss and a page walk, which a 2 MB page's translation (one TLB entry for 512
//! small pages) avoids. Tables that scans stream through (the chunks of
//! [`crate::chunked::ChunkedVec`] after the first): a 1M-row int8 code scan ran about 1.1x
//! faster on them.

/// A vector with room for `n` elements, its memory advised as huge-page backed (Linux
/// `MADV_HUGEPAGE`, honoured when transparent huge pages are in `madvise` or `always` mode;
/// a no-op elsewhere). Advised before the first write, so the pages are huge when faulted in.
/// `None` when the room cannot be reserved (the caller does without).
pub(crate) fn try_vec_with_capacity<T>(n: usize) -> Option<Vec<T>> {
    let mut v: Vec<T> = Vec::new();
    v.try_reserve_exact(n).ok()?;
    advise(
        v.as_ptr().cast::<u8>(),
        n.saturating_mul(std::mem::size_of::<T>()),
    );
    Some(v)
}

#[cfg(target_os = "linux")]
fn advise(ptr: *const u8, len: usize) {
    const HUGE: usize = 2 << 20;
    let (start, end) = (
        (ptr as usize).next_multiple_of(HUGE),
        (ptr as usize + len) / HUGE * HUGE,
    );
    if end > start {
        // SAFETY: [start, end) lies inside the allocation of `len` bytes at `ptr`, which the
        // caller's new vector owns and nothing else references yet; MADV_HUGEPAGE changes only
        // how the kernel backs those pages, never their contents or validity. Its result is
        // advice either way, so a failure is ignored.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise(_ptr: *const u8, _len: usize) {}
