//! Per-user work over a store's key-ordered event scan, on every core.
//!
//! The embedded store reads events in `(user_id, event_time)` order
//! (SQLite hands rows out one connection at a time, so one reading thread
//! per connection); evaluating the feature spec and labels for each user is
//! independent of every other user and costs about as much as the reading.
//! So reading threads pack whole users into chunks and worker threads
//! evaluate them, each chunk's result coming back tagged with its position:
//! the caller gets results in user order, exactly as a single-threaded scan
//! would produce them.
//!
//! Reading itself is split too: the caller cuts its users into parts (id
//! ranges) that several threads read at once, each over its own
//! connection.
//!
//! Memory: at most `2 × cores` chunks wait between the readers and the
//! workers (each about [`CHUNK_EVENTS`] events), plus the results.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use crate::domain::features::UserEvent;

/// Events per chunk handed to a worker (a chunk always holds whole users,
/// so one with a longer history makes a larger chunk).
pub const CHUNK_EVENTS: usize = 32_768;

/// Whole users' event histories, in user order.
#[derive(Debug, Default)]
pub struct UserChunk {
    users: Vec<(u64, Range<usize>)>,
    events: Vec<UserEvent>,
}

impl UserChunk {
    /// Each user with their time-ordered events.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[UserEvent])> {
        self.users
            .iter()
            .map(|(u, r)| (*u, &self.events[r.clone()]))
    }
}

/// What a reading thread pushes events into, user by user.
pub struct UserFeed {
    chunk: UserChunk,
    current: Option<(u64, usize)>,
    /// The part being read and the chunk's number within it: results are
    /// put in order by both.
    part: usize,
    seq: usize,
    out: SyncSender<((usize, usize), UserChunk)>,
    /// Set when every worker is gone (one panicked): reading stops early.
    closed: bool,
}

impl UserFeed {
    /// Appends one event of `user`; events arrive grouped by user and
    /// time-ordered within a user.
    pub fn push(&mut self, user: u64, event: UserEvent) {
        match self.current {
            Some((u, _)) if u == user => {}
            _ => {
                self.close_user();
                if self.chunk.events.len() >= CHUNK_EVENTS {
                    self.send();
                }
                self.current = Some((user, self.chunk.events.len()));
            }
        }
        self.chunk.events.push(event);
    }

    /// Whether the consumers are gone (the caller may stop reading).
    pub fn closed(&self) -> bool {
        self.closed
    }

    fn close_user(&mut self) {
        if let Some((u, start)) = self.current.take() {
            self.chunk.users.push((u, start..self.chunk.events.len()));
        }
    }

    fn send(&mut self) {
        let chunk = std::mem::take(&mut self.chunk);
        self.chunk.events.reserve(CHUNK_EVENTS);
        if self.out.send(((self.part, self.seq), chunk)).is_err() {
            self.closed = true;
        }
        self.seq += 1;
    }

    fn finish(mut self) {
        self.close_user();
        if !self.chunk.users.is_empty() {
            self.send();
        }
    }
}

/// Reads `parts` parts of the users — `read(k, feed)` feeds part `k`'s
/// users in order, and every user of part `k` comes before those of part
/// `k + 1` — on up to one thread per core, and runs `work` on every chunk
/// on the machine's cores. Returns the chunks' results in user order, or
/// the first read error.
///
/// # Errors
/// Whatever `read` returns; a panic in `read` or `work` is resumed on the
/// caller.
pub fn map_users<R: Send, E: Send>(
    parts: usize,
    read: impl Fn(usize, &mut UserFeed) -> Result<(), E> + Sync,
    work: impl Fn(&UserChunk) -> R + Sync,
) -> Result<Vec<R>, E> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let (tx, rx) = sync_channel::<((usize, usize), UserChunk)>(2 * cores);
    let rx = Arc::new(Mutex::new(rx));
    let next_part = AtomicUsize::new(0);
    let failed: Mutex<Option<E>> = Mutex::new(None);
    let (work, read) = (&work, &read);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..cores)
            .map(|_| {
                let rx = rx.clone();
                scope.spawn(move || drain(&rx, work))
            })
            .collect();
        // Only the workers hold the receiver: if they all die, sending
        // fails instead of blocking a reader forever.
        drop(rx);
        let readers: Vec<_> = (0..cores.min(parts))
            .map(|_| {
                let (tx, next_part, failed) = (tx.clone(), &next_part, &failed);
                scope.spawn(move || {
                    loop {
                        let part = next_part.fetch_add(1, Ordering::Relaxed);
                        if part >= parts || lock(failed).is_some() {
                            return;
                        }
                        let mut feed = UserFeed {
                            chunk: UserChunk::default(),
                            current: None,
                            part,
                            seq: 0,
                            out: tx.clone(),
                            closed: false,
                        };
                        match read(part, &mut feed) {
                            Ok(()) if feed.closed => return,
                            Ok(()) => feed.finish(),
                            Err(e) => {
                                lock(failed).get_or_insert(e);
                                return;
                            }
                        }
                    }
                })
            })
            .collect();
        // Ends the channel once the readers are done: the workers finish
        // what is queued and return.
        drop(tx);
        for h in readers {
            if let Err(panic) = h.join() {
                std::panic::resume_unwind(panic);
            }
        }
        let mut results: Vec<((usize, usize), R)> = Vec::new();
        for h in workers {
            match h.join() {
                Ok(part) => results.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        if let Some(e) = lock(&failed).take() {
            return Err(e);
        }
        results.sort_unstable_by_key(|(at, _)| *at);
        Ok(results.into_iter().map(|(_, r)| r).collect())
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn drain<R>(
    rx: &Mutex<Receiver<((usize, usize), UserChunk)>>,
    work: &(impl Fn(&UserChunk) -> R + Sync),
) -> Vec<((usize, usize), R)> {
    let mut out = Vec::new();
    loop {
        // The lock is held only to take the next chunk, not while working.
        let next = lock(rx).recv();
        let Ok((at, chunk)) = next else {
            return out;
        };
        out.push((at, work(&chunk)));
    }
}

/// Splits the user ids `min..=max` into `parts` contiguous ranges of equal
/// width (fewer when there are fewer ids), in order.
pub fn id_ranges(min: i64, max: i64, parts: usize) -> Vec<(i64, i64)> {
    if max < min {
        return Vec::new();
    }
    let span = i128::from(max) - i128::from(min) + 1;
    let parts = (parts.max(1) as i128).min(span);
    (0..parts)
        .map(|k| {
            let lo = i128::from(min) + span * k / parts;
            let hi = i128::from(min) + span * (k + 1) / parts - 1;
            // Both lie within min..=max, so they fit.
            (lo as i64, hi as i64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(time: i64) -> UserEvent {
        UserEvent {
            time,
            type_idx: 0,
            session: 0,
            amount: None,
        }
    }

    #[test]
    fn results_come_back_in_user_order_with_whole_users() {
        // Users with 1..=50 events each, enough for many chunks.
        let users: Vec<(u64, usize)> = (1..=20_000u64)
            .map(|u| (u * 3, (u % 50) as usize + 1))
            .collect();
        let total: usize = users.iter().map(|(_, n)| n).sum();
        assert!(total > 4 * CHUNK_EVENTS);
        // Parts of 4000 users (about 100k events, several chunks) each,
        // read by several threads at once.
        let parts = users.chunks(4_000).collect::<Vec<_>>();
        let got = map_users(
            parts.len(),
            |k, feed| {
                for (u, n) in parts[k] {
                    for t in 0..*n {
                        feed.push(*u, ev(t as i64));
                    }
                }
                Ok::<(), ()>(())
            },
            |chunk| chunk.iter().map(|(u, e)| (u, e.len())).collect::<Vec<_>>(),
        )
        .unwrap();
        assert!(got.len() > 2 * parts.len(), "{} chunks", got.len());
        let flat: Vec<(u64, usize)> = got.into_iter().flatten().collect();
        assert_eq!(flat, users);
    }

    #[test]
    fn a_read_error_is_returned_and_nothing_hangs() {
        let got: Result<Vec<usize>, &str> = map_users(
            4,
            |k, feed| {
                for u in 0..100_000u64 {
                    feed.push(k as u64 * 100_000 + u, ev(0));
                }
                if k == 2 { Err("disk gone") } else { Ok(()) }
            },
            |chunk| chunk.iter().count(),
        );
        assert_eq!(got, Err("disk gone"));
    }

    #[test]
    fn no_events_give_no_chunks() {
        let got = map_users(3, |_, _| Ok::<(), ()>(()), |chunk| chunk.iter().count()).unwrap();
        assert!(got.is_empty());
    }

    #[test]
    fn id_ranges_cover_every_id_once_in_order() {
        for (min, max, parts) in [
            (1, 100, 8),
            (5, 7, 8),
            (0, 0, 3),
            (i64::MIN, i64::MAX, 8),
            (-3, 1_000_003, 7),
        ] {
            let r = id_ranges(min, max, parts);
            assert!(!r.is_empty() && r.len() <= parts);
            assert_eq!(r[0].0, min);
            assert_eq!(r[r.len() - 1].1, max);
            for w in r.windows(2) {
                assert_eq!(w[0].1 + 1, w[1].0, "{min} {max} {parts}: {r:?}");
            }
            assert!(r.iter().all(|(lo, hi)| lo <= hi));
        }
        assert!(id_ranges(5, 4, 2).is_empty());
    }
}
