//! The greeting log: one line appended per `/hello` request, and the last
//! lines read back for `GET /logs`.

use std::fs::OpenOptions;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Most bytes read back from the end of the file for one tail: a file of
/// very long lines gives fewer lines rather than a huge response.
const MAX_TAIL_BYTES: u64 = 8 << 20;

/// Appends `line` and a newline to the file at `path`, creating the file
/// (not its directory). One `write` call, so concurrent appends from
/// several requests (or replicas sharing a volume) do not interleave.
pub fn append_line(path: &Path, line: &str) -> io::Result<()> {
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line);
    buf.push('\n');
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(buf.as_bytes())
}

/// The last `n` lines of the file at `path`, oldest first; a missing file
/// has no lines.
pub fn tail(path: &Path, n: usize) -> io::Result<Vec<String>> {
    match std::fs::File::open(path) {
        Ok(file) => tail_lines(file, n, 64 * 1024),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The last `n` lines of `r`, reading backwards from the end in blocks of
/// `block` bytes (8 MiB at most). A final line without a
/// newline counts; `\r\n` endings are accepted; invalid UTF-8 is replaced.
pub fn tail_lines<R: Read + Seek>(mut r: R, n: usize, block: usize) -> io::Result<Vec<String>> {
    let len = r.seek(SeekFrom::End(0))?;
    if n == 0 || len == 0 {
        return Ok(Vec::new());
    }
    let block = block.max(1) as u64;
    let mut start = len;
    // Blocks from the end backwards.
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    let mut newlines = 0usize;
    while start > 0 && len - start < MAX_TAIL_BYTES {
        let size = block.min(start);
        start -= size;
        r.seek(SeekFrom::Start(start))?;
        let mut buf = vec![0u8; size as usize];
        r.read_exact(&mut buf)?;
        newlines += buf.iter().filter(|&&b| b == b'\n').count();
        blocks.push(buf);
        // n lines need n separators before them (plus the file's own
        // final newline, if any).
        if newlines > n {
            break;
        }
    }
    let mut bytes = Vec::with_capacity((len - start) as usize);
    for b in blocks.iter().rev() {
        bytes.extend_from_slice(b);
    }
    let mut text: &[u8] = &bytes;
    if let Some(rest) = text.strip_suffix(b"\n") {
        text = rest;
    }
    let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    if start > 0 && !lines.is_empty() {
        // The first piece starts mid-line.
        lines.remove(0);
    }
    let skip = lines.len().saturating_sub(n);
    Ok(lines[skip..]
        .iter()
        .map(|l| String::from_utf8_lossy(l.strip_suffix(b"\r").unwrap_or(l)).into_owned())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn tail_of(text: &str, n: usize, block: usize) -> Vec<String> {
        tail_lines(Cursor::new(text.as_bytes()), n, block).unwrap()
    }

    #[test]
    fn returns_the_last_lines_in_order_whatever_the_block_size() {
        let text: String = (1..=50).map(|i| format!("line {i}\n")).collect();
        let want: Vec<String> = (46..=50).map(|i| format!("line {i}")).collect();
        for block in [1, 2, 3, 7, 8, 64, 4096] {
            assert_eq!(tail_of(&text, 5, block), want, "block {block}");
        }
        let all: Vec<String> = (1..=50).map(|i| format!("line {i}")).collect();
        for block in [1, 5, 4096] {
            assert_eq!(tail_of(&text, 100, block), all, "block {block}");
            assert_eq!(tail_of(&text, 50, block), all, "block {block}");
        }
    }

    #[test]
    fn edge_cases() {
        assert!(tail_of("", 10, 4).is_empty());
        assert!(tail_of("a\nb\n", 0, 4).is_empty());
        assert_eq!(tail_of("a\nb", 1, 1), ["b"]);
        assert_eq!(tail_of("a\nb", 5, 1), ["a", "b"]);
        assert_eq!(tail_of("a\r\nb\r\n", 5, 3), ["a", "b"]);
        assert_eq!(tail_of("\n\nx\n", 5, 2), ["", "", "x"]);
        assert_eq!(tail_of("single", 3, 2), ["single"]);
    }

    #[test]
    fn missing_files_have_no_lines_and_appends_create_the_file() {
        let dir = std::env::temp_dir().join(format!("hello-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hello.log");
        let _ = std::fs::remove_file(&path);
        assert!(tail(&path, 10).unwrap().is_empty());
        append_line(&path, "one").unwrap();
        append_line(&path, "two").unwrap();
        assert_eq!(tail(&path, 10).unwrap(), ["one", "two"]);
        assert_eq!(tail(&path, 1).unwrap(), ["two"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
