//! Trial logs, bounded: the rules both backends store a log by.
//!
//! A trial has one log, the concatenation of its attempts' streams (the
//! program's stdout and stderr as its worker ships them, in chunks at byte
//! offsets of the attempt's stream). What is kept per trial is a
//! `LogHeader` and the text in pieces, each keyed by its logical start, so
//! an append writes the chunk and one small piece, never the whole log.
//!
//! Positions. Every byte ever appended has a logical position: the chunks'
//! new text and the gap markers (`[hpo: N bytes of output dropped]`), so
//! `total` only grows. When the kept text outgrows its bound the oldest
//! part is dropped: `dropped` bytes, from position 0, and the kept text
//! then starts with the marker `[hpo: earlier output dropped (N bytes)]`,
//! which stands in for the last of those dropped bytes (`first` =
//! `dropped` − its length). So a read from any offset returns a slice with
//! `start + text.len() == total`, and a reader that follows with offset =
//! the previous total sees each byte once, and the marker when it fell
//! behind.

use super::{Result, StorageError};
use hpo_proto::TrialLog;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The last piece takes the next chunk's text in place (rewritten whole)
/// while both fit in this; otherwise the text starts a new piece. Bounds
/// what an append writes (one piece plus the chunk) and the piece count.
pub const PIECE_BYTES: usize = 4 << 10;

/// The smallest bound applied: room for the marker and some text.
pub const MIN_BOUND: u64 = 256;

/// What is kept of a trial's log besides its text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogHeader {
    /// The latest attempt seen: chunks of older ones are ignored.
    pub attempt: u32,
    /// Bytes of that attempt's stream stored so far.
    pub received: u64,
    /// Logical bytes of the whole log ever appended (markers included).
    pub total: u64,
    /// Logical bytes dropped to keep the log within its bound.
    pub dropped: u64,
    /// The log ends inside a line: a gap marker starts a new one.
    #[serde(default)]
    pub mid_line: bool,
}

impl LogHeader {
    /// Logical position of the kept text's first byte (the trim marker's).
    pub fn first(&self) -> u64 {
        self.dropped.saturating_sub(trim_marker_len(self.dropped))
    }

    /// Bytes kept: the trim marker and the text after it.
    pub fn kept(&self) -> u64 {
        trim_marker_len(self.dropped) + (self.total - self.dropped)
    }
}

/// The line a log starts with once its oldest part was dropped.
pub fn trim_marker(dropped: u64) -> String {
    format!("[hpo: earlier output dropped ({dropped} bytes)]\n")
}

fn trim_marker_len(dropped: u64) -> u64 {
    if dropped == 0 {
        0
    } else {
        trim_marker(dropped).len() as u64
    }
}

/// The line stored where a worker dropped `n` bytes of a stream.
pub fn gap_marker(n: u64) -> String {
    format!("[hpo: {n} bytes of output dropped]\n")
}

/// Pieces in order, each with its logical start.
pub type PieceIter<'a> = Box<dyn Iterator<Item = Result<(u64, String)>> + 'a>;

/// Where a backend keeps one trial's pieces (each keyed by its logical
/// start; together they cover `dropped..total` without gaps).
pub trait Pieces {
    /// The piece that starts last.
    fn last(&self) -> Result<Option<(u64, String)>>;
    /// The pieces in order, from the one that holds `pos` (the first one
    /// when `pos` precedes them all).
    fn scan(&self, pos: u64) -> Result<PieceIter<'_>>;
}

/// What one chunk changes in a stored log: apply `remove`, then `put`,
/// then store `header`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edit {
    pub header: LogHeader,
    /// Pieces to delete, by start.
    pub remove: Vec<u64>,
    /// Pieces to store (new or rewritten), by start.
    pub put: Vec<(u64, String)>,
}

/// A piece being considered by `append`.
struct Piece {
    start: u64,
    text: String,
    /// In the backend under this start (so removing it means deleting it).
    stored: bool,
    /// Must be written.
    dirty: bool,
}

impl Piece {
    fn end(&self) -> u64 {
        self.start + self.text.len() as u64
    }
}

/// What appending `text` at `offset` of `attempt`'s stream changes, or
/// None when it changes nothing (a chunk of an older attempt, a
/// duplicate). `header` is the stored one (None before the first chunk);
/// the kept text stays within `max_bytes` (at least `MIN_BOUND`).
pub fn append(
    header: Option<&LogHeader>,
    pieces: &dyn Pieces,
    attempt: u32,
    offset: u64,
    text: &str,
    max_bytes: u64,
) -> Result<Option<Edit>> {
    let mut h = header.cloned().unwrap_or_default();
    let before = h.total;
    let Some(add) = accept(&mut h, attempt, offset, text) else {
        return Ok(None);
    };
    let mut edit = Edit::default();
    // The pieces this append may write: the stored last one (when the new
    // text joins it) and a new one.
    let mut tail = Vec::new();
    if !add.is_empty() {
        let last = pieces.last()?;
        if let Some((start, text)) = &last
            && start + text.len() as u64 != before
        {
            return Err(StorageError::Corrupt(format!(
                "log piece at {start} ends at {}, not at the log's end {before}",
                start + text.len() as u64
            )));
        }
        match last {
            Some((start, mut joined)) if joined.len() + add.len() <= PIECE_BYTES => {
                joined.push_str(&add);
                tail.push(Piece {
                    start,
                    text: joined,
                    stored: true,
                    dirty: true,
                });
            }
            _ => tail.push(Piece {
                start: before,
                text: add,
                stored: false,
                dirty: true,
            }),
        }
    }
    let max = max_bytes.max(MIN_BOUND);
    if h.kept() > max {
        trim(&mut h, pieces, tail, max, &mut edit)?;
    } else {
        edit.put.extend(tail.into_iter().map(|p| (p.start, p.text)));
    }
    edit.header = h;
    Ok(Some(edit))
}

/// The header after a chunk, and the text it appends (possibly empty, when
/// only the attempt changed), or None when it changes nothing.
fn accept(h: &mut LogHeader, attempt: u32, offset: u64, text: &str) -> Option<String> {
    if attempt < h.attempt {
        return None;
    }
    let new_attempt = attempt > h.attempt;
    if new_attempt {
        h.attempt = attempt;
        h.received = 0;
    }
    let end = offset.saturating_add(text.len() as u64);
    if end <= h.received {
        return new_attempt.then(String::new);
    }
    let mut add = String::new();
    let body = if offset > h.received {
        if h.mid_line {
            add.push('\n');
        }
        add.push_str(&gap_marker(offset - h.received));
        text
    } else {
        // Overlap: only the new suffix, from a char boundary.
        let mut from = (h.received - offset) as usize;
        while !text.is_char_boundary(from) {
            from += 1;
        }
        &text[from..]
    };
    add.push_str(body);
    h.received = end;
    h.total += add.len() as u64;
    if !add.is_empty() {
        h.mid_line = !add.ends_with('\n');
    }
    Some(add)
}

/// Drops the oldest text so the kept text (marker included) fits `max`,
/// cutting after a newline where one lies in what would be kept, else at
/// a char boundary.
fn trim(
    h: &mut LogHeader,
    pieces: &dyn Pieces,
    tail: Vec<Piece>,
    max: u64,
    edit: &mut Edit,
) -> Result<()> {
    let total = h.total;
    // The least cut that fits: the marker's length grows with what it
    // counts, so take the longest it can be.
    let least = match max.checked_sub(trim_marker_len(total)) {
        Some(room) => total.saturating_sub(room),
        None => total,
    }
    .max(h.dropped);
    let tail_start = tail.first().map_or(u64::MAX, |p| p.start);
    let mut tail = tail.into_iter();
    let mut visited = Vec::new();
    let mut cut = None;
    'scan: {
        // The stored pieces before the tail (whose stored last piece, if it
        // is rewritten, is the tail's version).
        if h.dropped < tail_start {
            for r in pieces.scan(h.dropped)? {
                let (start, text) = r?;
                if start >= tail_start {
                    break;
                }
                let p = Piece {
                    start,
                    text,
                    stored: true,
                    dirty: false,
                };
                if visit(p, least, total, &mut visited, &mut cut) {
                    break 'scan;
                }
            }
        }
        for p in tail.by_ref() {
            if visit(p, least, total, &mut visited, &mut cut) {
                break 'scan;
            }
        }
    }
    let cut = match cut {
        Some(c) => c,
        None => visited
            .iter()
            .find(|p| p.start <= least && least < p.end())
            .map_or(total, |p| {
                let mut i = (least - p.start) as usize;
                while !p.text.is_char_boundary(i) {
                    i += 1;
                }
                p.start + i as u64
            }),
    };
    for p in visited {
        if p.end() <= cut {
            if p.stored {
                edit.remove.push(p.start);
            }
        } else if p.start < cut {
            if p.stored {
                edit.remove.push(p.start);
            }
            let from = (cut - p.start) as usize;
            edit.put.push((cut, p.text[from..].to_string()));
        } else if p.dirty {
            edit.put.push((p.start, p.text));
        }
    }
    // Tail pieces after the one the cut is in: kept as they are.
    edit.put
        .extend(tail.filter(|p| p.dirty).map(|p| (p.start, p.text)));
    h.dropped = cut;
    Ok(())
}

/// Looks at one piece in order for the cut: true once it is found (after
/// the first newline at `least - 1` or later that leaves text to keep).
fn visit(
    p: Piece,
    least: u64,
    total: u64,
    visited: &mut Vec<Piece>,
    cut: &mut Option<u64>,
) -> bool {
    let from = least.saturating_sub(1);
    if p.end() > from {
        let lo = from.saturating_sub(p.start) as usize;
        if let Some(i) = p.text.as_bytes()[lo..].iter().position(|&b| b == b'\n') {
            let q = p.start + (lo + i) as u64;
            if q + 1 < total {
                *cut = Some(q + 1);
                visited.push(p);
                return true;
            }
        }
    }
    visited.push(p);
    false
}

/// The kept log from logical position `offset` on (see the module's
/// comment); an empty log when `header` is None.
pub fn read(header: Option<&LogHeader>, pieces: &dyn Pieces, offset: u64) -> Result<TrialLog> {
    let Some(h) = header else {
        return Ok(TrialLog::default());
    };
    let mut out = TrialLog {
        text: String::new(),
        start: h.total,
        total: h.total,
        dropped: h.dropped,
    };
    if offset >= h.total {
        return Ok(out);
    }
    let pos = if h.dropped > 0 && offset <= h.first() {
        out.text = trim_marker(h.dropped);
        out.start = h.first();
        h.dropped
    } else {
        // Inside the marker: from the text after it.
        offset.max(h.dropped)
    };
    let mut started = !out.text.is_empty();
    for r in pieces.scan(pos)? {
        let (start, text) = r?;
        let end = start + text.len() as u64;
        if end <= pos {
            continue;
        }
        let mut lo = pos.saturating_sub(start) as usize;
        while !text.is_char_boundary(lo) {
            lo += 1;
        }
        if !started {
            out.start = start + lo as u64;
            started = true;
        }
        out.text.push_str(&text[lo..]);
    }
    debug_assert_eq!(out.start + out.text.len() as u64, out.total, "{h:?}");
    Ok(out)
}

impl Pieces for BTreeMap<u64, String> {
    fn last(&self) -> Result<Option<(u64, String)>> {
        Ok(self.last_key_value().map(|(k, v)| (*k, v.clone())))
    }

    fn scan(&self, pos: u64) -> Result<PieceIter<'_>> {
        let from = self.range(..=pos).next_back().map_or(0, |(k, _)| *k);
        Ok(Box::new(
            self.range(from..).map(|(k, v)| Ok((*k, v.clone()))),
        ))
    }
}

/// One trial's log in memory: the in-memory backend's, and the reference
/// the unit tests check the rules on.
#[derive(Debug, Clone, Default)]
pub struct BoundedLog {
    header: Option<LogHeader>,
    pieces: BTreeMap<u64, String>,
}

impl BoundedLog {
    /// Appends a chunk; false when it changed nothing.
    pub fn apply(&mut self, attempt: u32, offset: u64, text: &str, max_bytes: u64) -> Result<bool> {
        let Some(edit) = append(
            self.header.as_ref(),
            &self.pieces,
            attempt,
            offset,
            text,
            max_bytes,
        )?
        else {
            return Ok(false);
        };
        for start in &edit.remove {
            self.pieces.remove(start);
        }
        self.pieces.extend(edit.put);
        self.header = Some(edit.header);
        Ok(true)
    }

    pub fn read(&self, offset: u64) -> Result<TrialLog> {
        read(self.header.as_ref(), &self.pieces, offset)
    }

    pub fn header(&self) -> Option<&LogHeader> {
        self.header.as_ref()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const BIG: u64 = 1 << 20;

    fn log_of(chunks: &[(u32, u64, &str)], max: u64) -> BoundedLog {
        let mut l = BoundedLog::default();
        for (attempt, offset, text) in chunks {
            l.apply(*attempt, *offset, text, max).unwrap();
        }
        l
    }

    /// The pieces cover dropped..total without gaps and the header agrees.
    fn check(l: &BoundedLog) {
        let Some(h) = l.header() else { return };
        let mut at = h.dropped;
        for (start, text) in &l.pieces {
            assert_eq!(*start, at, "{l:?}");
            assert!(!text.is_empty());
            at += text.len() as u64;
        }
        assert_eq!(at, h.total, "{l:?}");
        let all = l.read(0).unwrap();
        assert_eq!(all.start, h.first());
        assert_eq!(all.start + all.text.len() as u64, all.total);
    }

    #[test]
    fn an_empty_log_reads_as_nothing() {
        let l = BoundedLog::default();
        assert_eq!(l.read(0).unwrap(), TrialLog::default());
        assert_eq!(l.read(9).unwrap(), TrialLog::default());
    }

    #[test]
    fn chunks_in_order_and_their_retries_are_stored_once() {
        let mut l = log_of(&[(1, 0, "ab\n"), (1, 3, "cd\n")], BIG);
        assert!(!l.apply(1, 0, "ab\n", BIG).unwrap());
        assert!(!l.apply(1, 3, "cd\n", BIG).unwrap());
        assert!(!l.apply(1, 1, "b\n", BIG).unwrap());
        assert!(!l.apply(1, 6, "", BIG).unwrap());
        let r = l.read(0).unwrap();
        assert_eq!(
            (r.text.as_str(), r.start, r.total, r.dropped),
            ("ab\ncd\n", 0, 6, 0)
        );
        assert_eq!(l.read(3).unwrap().text, "cd\n");
        assert_eq!(l.read(3).unwrap().start, 3);
        let end = l.read(6).unwrap();
        assert_eq!((end.text.as_str(), end.start), ("", 6));
        assert_eq!(l.read(60).unwrap().start, 6);
        check(&l);
    }

    #[test]
    fn an_overlapping_chunk_adds_its_new_suffix() {
        let l = log_of(&[(1, 0, "hello "), (1, 3, "lo world\n")], BIG);
        assert_eq!(l.read(0).unwrap().text, "hello world\n");
        assert_eq!(l.header().unwrap().received, 12);
        check(&l);
    }

    #[test]
    fn a_suffix_cut_inside_a_char_starts_at_the_next_one() {
        // Received 1 byte; the next chunk restarts at 0 with a two-byte
        // char at 0..2: what follows it is appended.
        let l = log_of(&[(1, 0, "a"), (1, 0, "éb\n")], BIG);
        assert_eq!(l.read(0).unwrap().text, "ab\n");
        check(&l);
    }

    #[test]
    fn a_gap_becomes_a_marker_line() {
        let l = log_of(&[(1, 0, "start"), (1, 10, "end\n")], BIG);
        let r = l.read(0).unwrap();
        assert_eq!(r.text, "start\n[hpo: 5 bytes of output dropped]\nend\n");
        assert_eq!(r.total, r.text.len() as u64);
        assert_eq!(l.header().unwrap().received, 14);
        // At a line start the marker needs no newline of its own.
        let l = log_of(&[(1, 0, "a\n"), (1, 4, "b\n")], BIG);
        assert_eq!(
            l.read(0).unwrap().text,
            "a\n[hpo: 2 bytes of output dropped]\nb\n"
        );
        // A gap at the very start of an attempt.
        let l = log_of(&[(2, 7, "x\n")], BIG);
        assert_eq!(
            l.read(0).unwrap().text,
            "[hpo: 7 bytes of output dropped]\nx\n"
        );
        check(&l);
    }

    #[test]
    fn a_new_attempt_starts_its_stream_and_older_ones_are_ignored() {
        let mut l = log_of(&[(1, 0, "one\n"), (2, 0, "two\n")], BIG);
        assert!(!l.apply(1, 4, "late\n", BIG).unwrap());
        assert!(l.apply(2, 4, "more\n", BIG).unwrap());
        assert_eq!(l.read(0).unwrap().text, "one\ntwo\nmore\n");
        let h = l.header().unwrap();
        assert_eq!((h.attempt, h.received, h.total), (2, 9, 13));
        // A new attempt whose first chunk is empty still moves the log on.
        assert!(l.apply(3, 0, "", BIG).unwrap());
        assert!(!l.apply(2, 9, "x", BIG).unwrap());
        check(&l);
    }

    fn lines(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("line {i:04} of the program's output\n"))
            .collect()
    }

    #[test]
    fn past_the_bound_the_oldest_lines_give_way_to_a_marker() {
        let mut l = BoundedLog::default();
        let mut stream = String::new();
        for line in lines(100) {
            l.apply(1, stream.len() as u64, &line, 1000).unwrap();
            stream.push_str(&line);
            check(&l);
            assert!(l.header().unwrap().kept() <= 1000);
        }
        let r = l.read(0).unwrap();
        assert!(r.text.len() <= 1000);
        let marker = trim_marker(r.dropped);
        assert!(r.text.starts_with(&marker), "{}", r.text);
        let kept = &r.text[marker.len()..];
        assert!(kept.starts_with("line "));
        assert_eq!(format!("{}{kept}", &stream[..r.dropped as usize]), stream);
        // The whole bound is used, less at most one line.
        assert!(r.text.len() > 1000 - 40, "{}", r.text.len());
        assert_eq!(r.total, stream.len() as u64);
        assert_eq!(r.start, r.dropped - marker.len() as u64);
    }

    #[test]
    fn a_log_without_newlines_is_cut_at_a_char_boundary() {
        let mut l = BoundedLog::default();
        let mut stream = String::new();
        for _ in 0..50 {
            let chunk = "ü€x".repeat(7);
            l.apply(1, stream.len() as u64, &chunk, 300).unwrap();
            stream.push_str(&chunk);
            check(&l);
        }
        let r = l.read(0).unwrap();
        let kept = &r.text[trim_marker(r.dropped).len()..];
        assert!(stream.ends_with(kept));
        assert!(r.text.len() <= 300);
        assert!(r.text.len() > 290);
    }

    #[test]
    fn one_chunk_larger_than_the_bound_keeps_its_end() {
        let big: String = lines(200).concat();
        let l = log_of(&[(1, 0, "first\n"), (1, 6, &big)], 1024);
        let r = l.read(0).unwrap();
        assert!(r.text.len() <= 1024);
        assert!(r.text.ends_with("line 0199 of the program's output\n"));
        assert_eq!(
            r.dropped + (r.text.len() - trim_marker(r.dropped).len()) as u64,
            r.total
        );
        check(&l);
    }

    #[test]
    fn reads_round_up_inside_a_char_and_skip_a_partial_marker() {
        let l = log_of(&[(1, 0, "aé\n")], BIG);
        let r = l.read(2).unwrap();
        assert_eq!((r.text.as_str(), r.start), ("\n", 3));
        let mut l = BoundedLog::default();
        let mut at = 0;
        for line in lines(40) {
            l.apply(1, at, &line, 400).unwrap();
            at += line.len() as u64;
        }
        let h = l.header().unwrap().clone();
        // Inside the marker: from the text after it.
        let r = l.read(h.first() + 3).unwrap();
        assert_eq!(r.start, h.dropped);
        assert!(r.text.starts_with("line "));
        // Before the kept text: all of it, marker first.
        let r = l.read(1).unwrap();
        assert_eq!(r.start, h.first());
        assert!(r.text.starts_with("[hpo: earlier output dropped"));
    }

    #[test]
    fn small_chunks_share_pieces() {
        let mut l = BoundedLog::default();
        let mut at = 0;
        for line in lines(1000) {
            l.apply(1, at, &line, BIG).unwrap();
            at += line.len() as u64;
        }
        check(&l);
        let pieces = l.pieces.len();
        assert!(pieces <= (at as usize) / (PIECE_BYTES / 2) + 1, "{pieces}");
        assert!(l.pieces.values().all(|p| p.len() <= PIECE_BYTES));
    }

    /// Random chunks, retries, overlaps, gaps and attempts against a plain
    /// string model of the whole log.
    #[test]
    fn random_streams_agree_with_a_plain_model() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n.max(1)
        };
        let alphabet = ["a", "bc", "\n", "é", "€", "line\n", "𝄞"];
        for round in 0..40 {
            let max = 256 + rand(3000);
            let mut l = BoundedLog::default();
            let mut model = String::new(); // every logical byte
            let mut next = 0u64;
            let mut attempt = 1;
            let mut stream = String::new();
            let mut sent = 0usize;
            for _ in 0..300 {
                if rand(40) == 0 {
                    attempt += 1;
                    stream.clear();
                    sent = 0;
                }
                while stream.len() < sent + 400 {
                    stream.push_str(alphabet[rand(alphabet.len() as u64) as usize]);
                }
                // Cut a chunk at char boundaries, sometimes a retry, a gap
                // or an overlap.
                let mut from = match rand(10) {
                    0 => sent.saturating_sub(rand(20) as usize),
                    1 => sent + rand(30) as usize,
                    _ => sent,
                };
                while !stream.is_char_boundary(from) {
                    from += 1;
                }
                let mut to = from + rand(120) as usize;
                while !stream.is_char_boundary(to) {
                    to += 1;
                }
                let chunk = &stream[from..to];
                l.apply(attempt, from as u64, chunk, max).unwrap();
                // The model.
                if to > sent {
                    if from > sent {
                        if !model.is_empty() && !model.ends_with('\n') {
                            model.push('\n');
                        }
                        model.push_str(&gap_marker((from - sent) as u64));
                        model.push_str(chunk);
                    } else {
                        model.push_str(&stream[sent..to]);
                    }
                    sent = to;
                }
                check(&l);
                let h = l.header().unwrap();
                assert_eq!(h.total, model.len() as u64, "round {round}");
                assert!(h.kept() <= max, "round {round}");
                let r = l.read(0).unwrap();
                let kept = &r.text[trim_marker_len(h.dropped) as usize..];
                assert_eq!(kept, &model[h.dropped as usize..], "round {round}");
                if rand(5) == 0 {
                    let r = l.read(next).unwrap();
                    assert!(r.start >= next, "round {round}");
                    if r.start >= h.dropped {
                        assert_eq!(r.text, &model[r.start as usize..], "round {round}");
                    } else {
                        assert_eq!(r.start, h.first());
                        assert_eq!(&r.text[trim_marker_len(h.dropped) as usize..], kept);
                    }
                    next = r.total;
                }
            }
        }
    }
}
