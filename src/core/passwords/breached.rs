//! The operator's list of breached passwords: Have I Been Pwned's "Pwned
//! Passwords" in its SHA-1 form, one `HASH:COUNT` line per password, sorted
//! by hash. The file is memory-mapped and binary-searched in place, so a
//! multi-gigabyte list costs page cache rather than heap, and a lookup
//! reads about thirty lines.

use std::{cmp::Ordering, fs::File, path::Path};

use anyhow::Context;
use memmap2::Mmap;
use sha1::{Digest, Sha1};

/// A SHA-1 hash in hex.
const HASH_HEX: usize = 40;

const FORMAT: &str = "expected lines of a SHA-1 hash in hex, optionally ':' and a count, \
                      sorted by hash, as in Have I Been Pwned's SHA-1 download";

pub(super) struct BreachedFile {
    map: Mmap,
}

impl BreachedFile {
    /// Maps the file and checks that it looks like the list: a first and a
    /// last line of the format, in order. Checking every line would read
    /// the whole file at each start.
    pub(super) fn open(path: &Path) -> anyhow::Result<Self> {
        let setting = || format!("AUTHD_BREACHED_PASSWORDS_FILE {}", path.display());
        let file = File::open(path).with_context(setting)?;
        if file.metadata().with_context(setting)?.len() == 0 {
            anyhow::bail!("{}: the file is empty; {FORMAT}", setting());
        }
        // SAFETY: the mapping is only ever read. Were another process to
        // truncate or rewrite the file in place, the bytes read here could
        // change or vanish; the README has operators replace the list by
        // renaming a new file over it and restarting, which leaves this
        // mapping on the old file's unchanged inode.
        let map = unsafe { Mmap::map(&file) }.with_context(setting)?;
        check_format(&map).with_context(|| format!("{}: {FORMAT}", setting()))?;
        Ok(Self { map })
    }

    /// Whether the password, exactly as typed, is in the list.
    pub(super) fn contains(&self, password: &str) -> bool {
        find(&self.map, &sha1_hex(password))
    }
}

/// SHA-1 in uppercase hex, as the list writes it.
fn sha1_hex(password: &str) -> [u8; HASH_HEX] {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut hex = [0; HASH_HEX];
    for (pair, byte) in hex
        .chunks_exact_mut(2)
        .zip(Sha1::digest(password.as_bytes()))
    {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
    hex
}

/// Binary search over byte offsets: look at the line around the middle of
/// what is left, and keep the half the hash must be in.
fn find(data: &[u8], hash: &[u8; HASH_HEX]) -> bool {
    // Lines that start before `low` sort before the hash, lines that start
    // at or after `high` after it; `low` is always a line's start.
    let (mut low, mut high) = (0, data.len());
    while low < high {
        let middle = low + (high - low) / 2;
        let start = data[low..middle]
            .iter()
            .rposition(|&byte| byte == b'\n')
            .map_or(low, |at| low + at + 1);
        let end = data[start..]
            .iter()
            .position(|&byte| byte == b'\n')
            .map_or(data.len(), |at| start + at);
        match compare(&data[start..end], hash) {
            Ordering::Equal => return true,
            Ordering::Less => low = end + 1,
            Ordering::Greater => high = start,
        }
    }
    false
}

/// A line's hash against ours. Lowercase hex sorts like uppercase (digits
/// come before letters in both), so a lowercase list works too.
fn compare(line: &[u8], hash: &[u8; HASH_HEX]) -> Ordering {
    key(line)
        .iter()
        .map(u8::to_ascii_uppercase)
        .cmp(hash.iter().copied())
}

/// The hash of a line: what comes before the count, without a CR.
fn key(line: &[u8]) -> &[u8] {
    let key = line.split(|&byte| byte == b':').next().unwrap_or(line);
    key.strip_suffix(b"\r").unwrap_or(key)
}

fn is_entry(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let (hash, count) = line.split_at(line.len().min(HASH_HEX));
    hash.len() == HASH_HEX
        && hash.iter().all(u8::is_ascii_hexdigit)
        && (count.is_empty()
            || count
                .strip_prefix(b":")
                .is_some_and(|digits| !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)))
}

fn check_format(data: &[u8]) -> anyhow::Result<()> {
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    let first = body.split(|&byte| byte == b'\n').next().unwrap_or(body);
    let last = body.rsplit(|&byte| byte == b'\n').next().unwrap_or(body);
    if !is_entry(first) {
        anyhow::bail!("the first line is not a hash");
    }
    if !is_entry(last) {
        anyhow::bail!("the last line is not a hash");
    }
    if key(first).to_ascii_uppercase() > key(last).to_ascii_uppercase() {
        anyhow::bail!("the lines are not sorted by hash");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SHA-1s in uppercase hex (`printf %s password | sha1sum` prints them
    /// in lowercase).
    const PASSWORD: &str = "5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8";
    const ABC: &str = "A9993E364706816ABA3E25717850C26C9CD0D89D";

    /// Lines as the download has them, CRLF included.
    fn lines(entries: &[&str]) -> Vec<u8> {
        entries
            .iter()
            .map(|entry| format!("{entry}\r\n"))
            .collect::<String>()
            .into_bytes()
    }

    /// A sorted list: the SHA-1s of "0" to "499" with counts, and of
    /// "password" and "abc".
    fn sample() -> Vec<String> {
        let mut entries: Vec<String> = (0..500)
            .map(|n| {
                let hash = sha1_hex(&n.to_string());
                format!("{}:{n}", String::from_utf8_lossy(&hash))
            })
            .collect();
        entries.push(format!("{PASSWORD}:9545824"));
        entries.push(format!("{ABC}:42"));
        entries.sort();
        entries
    }

    fn sample_data() -> Vec<u8> {
        let entries = sample();
        lines(&entries.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn hash_of(entry: &str) -> [u8; HASH_HEX] {
        entry.as_bytes()[..HASH_HEX].try_into().expect("40 bytes")
    }

    #[test]
    fn hashes_are_uppercase_sha1() {
        assert_eq!(&sha1_hex("password"), PASSWORD.as_bytes());
        assert_eq!(&sha1_hex("abc"), ABC.as_bytes());
    }

    #[test]
    fn every_line_is_found_the_first_and_last_included() {
        let (entries, data) = (sample(), sample_data());
        check_format(&data).expect("well formed");
        for entry in &entries {
            assert!(find(&data, &hash_of(entry)), "{entry}");
        }
        let (first, last) = (&entries[0], &entries[entries.len() - 1]);
        assert!(find(&data, &hash_of(first)) && find(&data, &hash_of(last)));
        assert!(find(&data, &sha1_hex("password")));
    }

    #[test]
    fn absent_hashes_are_not_found_before_between_or_after() {
        let data = sample_data();
        for absent in ["Password", "correct horse battery", "500", "-1"] {
            assert!(!find(&data, &sha1_hex(absent)), "{absent}");
        }
        assert!(!find(&data, &[b'0'; HASH_HEX]));
        assert!(!find(&data, &[b'F'; HASH_HEX]));
        assert!(!find(&lines(&[ABC]), &sha1_hex("password")));
    }

    #[test]
    fn lowercase_lists_and_bare_hashes_work() {
        let lower: Vec<String> = sample()
            .iter()
            .map(|entry| entry[..HASH_HEX].to_lowercase())
            .collect();
        let data = lower.join("\n").into_bytes();
        check_format(&data).expect("a list without counts or a final newline");
        assert!(find(&data, &sha1_hex("password")));
        assert!(find(&data, &sha1_hex("abc")));
        assert!(!find(&data, &sha1_hex("abcd")));
    }

    #[test]
    fn the_format_is_checked_at_both_ends() {
        check_format(&lines(&[ABC])).expect("one line");
        check_format(&lines(&[PASSWORD, ABC])).expect("two lines in order");
        let bad_count = format!("{ABC}:many");
        for bad in [
            lines(&["not a hash", ABC]),
            lines(&[ABC, PASSWORD]),
            lines(&[PASSWORD, &bad_count]),
            lines(&[&ABC[..39]]),
            b"\n".to_vec(),
        ] {
            let shown = String::from_utf8_lossy(&bad).into_owned();
            assert!(check_format(&bad).is_err(), "{shown}");
        }
    }

    #[test]
    fn opening_refuses_missing_empty_and_malformed_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing.txt");
        let error = BreachedFile::open(&missing).err().expect("missing");
        assert!(format!("{error:#}").contains("AUTHD_BREACHED_PASSWORDS_FILE"));
        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, b"").expect("write");
        assert!(BreachedFile::open(&empty).is_err());
        let text = dir.path().join("text.txt");
        std::fs::write(&text, b"hello\n").expect("write");
        assert!(BreachedFile::open(&text).is_err());
        let good = dir.path().join("good.txt");
        std::fs::write(&good, sample_data()).expect("write");
        let list = BreachedFile::open(&good).expect("a sorted list");
        assert!(list.contains("password") && list.contains("abc"));
        assert!(!list.contains("Password"));
    }
}
