//! An append-only vector whose clones share every chunk: the writer keeps appending while
//! readers hold an old clone as their snapshot. Appending to a chunk a reader still holds
//! copies that one chunk (bounded work), never the whole vector.

use std::sync::Arc;

/// Append-only, snapshot-friendly vector made of fixed-capacity chunks.
#[derive(Debug, Clone)]
pub struct ChunkedVec<T> {
    chunks: Vec<Arc<Vec<T>>>,
    chunk_len: usize,
    len: usize,
}

impl<T: Clone> ChunkedVec<T> {
    /// An empty vector with chunks of `chunk_len` elements (at least 1).
    pub fn new(chunk_len: usize) -> Self {
        ChunkedVec {
            chunks: Vec::new(),
            chunk_len: chunk_len.max(1),
            len: 0,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Elements per chunk.
    pub fn chunk_len(&self) -> usize {
        self.chunk_len
    }

    /// Number of chunks (the last may be partial).
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// Chunk `i`'s elements.
    pub fn chunk(&self, i: usize) -> &[T] {
        self.chunks.get(i).map(|c| c.as_slice()).unwrap_or(&[])
    }

    /// Element `i`, if present.
    #[cfg(test)]
    pub fn get(&self, i: usize) -> Option<&T> {
        self.chunks.get(i / self.chunk_len)?.get(i % self.chunk_len)
    }

    /// Contiguous elements `start..start + n`, if they lie inside one chunk.
    pub fn slice(&self, start: usize, n: usize) -> Option<&[T]> {
        let chunk = self.chunks.get(start / self.chunk_len)?;
        let at = start % self.chunk_len;
        chunk.get(at..at + n)
    }

    /// Appends one element.
    #[cfg(test)]
    pub fn push(&mut self, value: T) {
        self.extend_from_slice(std::slice::from_ref(&value));
    }

    /// Room for chunk number `index`. Every chunk after the first is advised as huge-page
    /// backed: a vector that outgrew one chunk is a large table that scans stream through:
    /// 1M int8 codes scored at 13.7-14.0 ns a row on 2 MB pages, 15.6 on 4 KB pages
    /// (`quant_kernels`' streaming case, docs/performance.md). The first is not, so a small
    /// table does not take a 2 MB page for a few rows.
    fn fresh_chunk(&self, index: usize) -> Vec<T> {
        if index == 0 {
            return Vec::with_capacity(self.chunk_len);
        }
        crate::hugepage::try_vec_with_capacity(self.chunk_len)
            .unwrap_or_else(|| Vec::with_capacity(self.chunk_len))
    }

    /// The last chunk, to change. When a clone still holds it, it is first copied into a
    /// fresh chunk with the whole chunk's room (and its memory advice), not cloned at its
    /// length and then grown.
    fn last_to_change(&mut self) -> Option<&mut Vec<T>> {
        let index = self.chunks.len().checked_sub(1)?;
        if Arc::get_mut(&mut self.chunks[index]).is_none() {
            let mut copy = self.fresh_chunk(index);
            copy.extend_from_slice(&self.chunks[index]);
            self.chunks[index] = Arc::new(copy);
        }
        Arc::get_mut(&mut self.chunks[index])
    }

    /// Appends a slice, filling the last chunk before starting a new one.
    pub fn extend_from_slice(&mut self, mut values: &[T]) {
        while !values.is_empty() {
            let room = match self.chunks.last() {
                Some(last) if last.len() < self.chunk_len => self.chunk_len - last.len(),
                _ => {
                    let chunk = self.fresh_chunk(self.chunks.len());
                    self.chunks.push(Arc::new(chunk));
                    self.chunk_len
                }
            };
            let take = room.min(values.len());
            // Every chunk is made with the whole chunk's room (`fresh_chunk`), so this never
            // reallocates.
            if let Some(chunk) = self.last_to_change() {
                chunk.extend_from_slice(&values[..take]);
            }
            self.len += take;
            values = &values[take..];
        }
    }

    /// The last `n` elements, to change in place, when they lie in the last chunk. A clone
    /// holding that chunk keeps its own copy (the chunk is copied first, as on append).
    pub fn tail_mut(&mut self, n: usize) -> Option<&mut [T]> {
        let last = self.last_to_change()?;
        let at = last.len().checked_sub(n)?;
        Some(&mut last[at..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_are_snapshots() {
        let mut v = ChunkedVec::new(3);
        v.extend_from_slice(&[1, 2, 3, 4]);
        let snap = v.clone();
        v.extend_from_slice(&[5, 6, 7]);
        v.push(8);
        assert_eq!(snap.len(), 4);
        assert_eq!(
            (0..4).map(|i| *snap.get(i).unwrap()).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert_eq!(v.len(), 8);
        assert_eq!(
            (0..8).map(|i| *v.get(i).unwrap()).collect::<Vec<_>>(),
            (1..=8).collect::<Vec<_>>()
        );
        assert_eq!(v.chunk_count(), 3);
        assert_eq!(v.slice(3, 3), Some(&[4, 5, 6][..]));
        assert_eq!(snap.get(3), Some(&4));
    }

    /// True when the mapping holding `addr` is advised as huge-page backed (`hg` among its
    /// `VmFlags` in `/proc/self/smaps`).
    #[cfg(target_os = "linux")]
    fn huge_page_advised(addr: usize) -> bool {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
        let mut inside = false;
        for line in smaps.lines() {
            let range = line.split_whitespace().next().unwrap_or("");
            if let Some((lo, hi)) = range.split_once('-') {
                if let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                {
                    inside = (lo..hi).contains(&addr);
                    continue;
                }
            }
            if inside {
                if let Some(flags) = line.strip_prefix("VmFlags:") {
                    return flags.split_whitespace().any(|f| f == "hg");
                }
            }
        }
        false
    }

    /// Chunks after the first are advised as huge-page backed, the first is not, and a last
    /// chunk shared with a snapshot is copied into an advised chunk too (a plain clone of it
    /// would not be).
    #[cfg(target_os = "linux")]
    #[test]
    fn chunks_after_the_first_are_advised_even_when_copied() {
        if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists() {
            eprintln!("skipped: this kernel has no transparent huge pages to advise");
            return;
        }
        const HUGE: usize = 2 << 20;
        let chunk = 3 * HUGE; // holds a whole aligned 2 MB page wherever it lands
        let aligned = |p: *const u8| (p as usize).next_multiple_of(HUGE);
        let mut v = ChunkedVec::new(chunk);
        v.extend_from_slice(&vec![1u8; chunk + 10]);
        assert!(!huge_page_advised(aligned(v.chunks[0].as_ptr())));
        assert!(huge_page_advised(aligned(v.chunks[1].as_ptr())));
        let snap = v.clone();
        let shared = v.chunks[1].as_ptr();
        v.push(7);
        assert_ne!(v.chunks[1].as_ptr(), shared, "the shared chunk was copied");
        assert!(huge_page_advised(aligned(v.chunks[1].as_ptr())));
        let mut t = snap.clone();
        t.tail_mut(1).unwrap()[0] = 9;
        assert!(huge_page_advised(aligned(t.chunks[1].as_ptr())));
        assert_eq!(
            (v.len(), snap.len(), t.len()),
            (chunk + 11, chunk + 10, chunk + 10)
        );
        assert_eq!(v.slice(chunk + 9, 2), Some(&[1u8, 7][..]));
        assert_eq!(snap.slice(chunk + 9, 1), Some(&[1u8][..]));
        assert_eq!(t.slice(chunk + 9, 1), Some(&[9u8][..]));
    }

    #[test]
    fn tail_mut_changes_this_vector_only() {
        let mut v = ChunkedVec::new(4);
        v.extend_from_slice(&[1, 2, 3, 4, 5, 6]);
        let snap = v.clone();
        v.tail_mut(2).unwrap().copy_from_slice(&[50, 60]);
        assert_eq!(v.slice(4, 2), Some(&[50, 60][..]));
        assert_eq!(snap.slice(4, 2), Some(&[5, 6][..]));
        assert!(v.tail_mut(3).is_none(), "only the last chunk's elements");
    }
}
