//! [`ChunkQueue`]: a FIFO of fixed-size chunks, for queues that hold millions of entries (the dedup
//! window's time order). A `VecDeque` grows by doubling and copies every entry when it does, a
//! stall proportional to its length; this one only ever allocates or frees one chunk.

use std::collections::VecDeque;

/// Entries per chunk.
pub const CHUNK: usize = 4096;

/// A first-in first-out queue of `T` in chunks of [`CHUNK`].
#[derive(Clone, Debug)]
pub struct ChunkQueue<T> {
    /// Each chunk is a `VecDeque` created with capacity [`CHUNK`] and never pushed past it, so it
    /// never reallocates; only the first chunk is popped from, only the last pushed to.
    chunks: VecDeque<VecDeque<T>>,
    len: usize,
}

impl<T> Default for ChunkQueue<T> {
    fn default() -> Self {
        ChunkQueue {
            chunks: VecDeque::new(),
            len: 0,
        }
    }
}

impl<T> ChunkQueue<T> {
    /// An empty queue.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `item` at the back.
    pub fn push_back(&mut self, item: T) {
        match self.chunks.back_mut() {
            Some(last) if last.len() < CHUNK => last.push_back(item),
            _ => {
                let mut chunk = VecDeque::with_capacity(CHUNK);
                chunk.push_back(item);
                self.chunks.push_back(chunk);
            }
        }
        self.len += 1;
    }

    /// The oldest entry.
    #[must_use]
    pub fn front(&self) -> Option<&T> {
        self.chunks.front().and_then(VecDeque::front)
    }

    /// The newest entry.
    #[must_use]
    pub fn back(&self) -> Option<&T> {
        self.chunks.back().and_then(VecDeque::back)
    }

    /// Removes and returns the oldest entry.
    pub fn pop_front(&mut self) -> Option<T> {
        let first = self.chunks.front_mut()?;
        let item = first.pop_front();
        if first.is_empty() {
            self.chunks.pop_front();
        }
        if item.is_some() {
            self.len -= 1;
        }
        item
    }

    /// Number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the queue is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_in_first_out_across_chunks() {
        let mut q = ChunkQueue::new();
        assert_eq!(q.pop_front(), None);
        let n = CHUNK * 3 + 17;
        for i in 0..n {
            q.push_back(i);
            assert_eq!(q.back(), Some(&i));
        }
        assert_eq!(q.len(), n);
        assert_eq!(q.chunks.len(), 4);
        for i in 0..n {
            assert_eq!(q.front(), Some(&i));
            assert_eq!(q.pop_front(), Some(i));
        }
        assert!(q.is_empty());
        assert!(q.chunks.is_empty(), "drained chunks are freed");
        assert_eq!(q.pop_front(), None);
    }

    #[test]
    fn interleaved_push_and_pop_keep_order() {
        let mut q = ChunkQueue::new();
        let (mut next_in, mut next_out) = (0u32, 0u32);
        for round in 0..50 {
            for _ in 0..(round * 97 % 5000) {
                q.push_back(next_in);
                next_in += 1;
            }
            for _ in 0..(round * 61 % 4000) {
                match q.pop_front() {
                    Some(v) => {
                        assert_eq!(v, next_out);
                        next_out += 1;
                    }
                    None => assert_eq!(next_out, next_in),
                }
            }
            assert_eq!(q.len(), (next_in - next_out) as usize);
        }
    }
}
