//! Positions in SQL text: line/column ↔ char index, blanking, and error snippets.

use crate::error::VeloError;

/// A SQL file's text with a line index, used to map tokenizer positions to chars.
#[derive(Debug, Clone)]
pub struct SourceText {
    chars: Vec<char>,
    line_starts: Vec<usize>,
}

impl SourceText {
    /// Indexes `text` by line.
    pub fn new(text: &str) -> Self {
        let chars: Vec<char> = text.chars().collect();
        let mut line_starts = vec![0];
        for (i, c) in chars.iter().enumerate() {
            if *c == '\n' {
                line_starts.push(i + 1);
            }
        }
        SourceText { chars, line_starts }
    }

    /// Char index of a 1-based (line, column) position; clamps past-the-end positions.
    pub fn index(&self, line: u64, column: u64) -> usize {
        let line = (line.max(1) as usize).min(self.line_starts.len());
        let start = self.line_starts[line - 1];
        (start + column.max(1) as usize - 1).min(self.chars.len())
    }

    /// The 1-based (line, column) of a char index.
    pub fn position(&self, index: usize) -> (u64, u64) {
        let line = self.line_starts.partition_point(|&s| s <= index).max(1);
        (line as u64, (index - self.line_starts[line - 1] + 1) as u64)
    }

    /// Char index of the first whole-word, case-insensitive occurrence of `word`.
    pub fn find_word(&self, word: &str) -> Option<usize> {
        let needle: Vec<char> = word.to_lowercase().chars().collect();
        let hay: Vec<char> = self.chars.iter().flat_map(|c| c.to_lowercase()).collect();
        if needle.is_empty() || hay.len() != self.chars.len() {
            return None;
        }
        let is_word = |c: char| c.is_alphanumeric() || c == '_';
        (0..hay.len().saturating_sub(needle.len() - 1)).find(|&i| {
            hay[i..i + needle.len()] == needle[..]
                && (i == 0 || !is_word(hay[i - 1]))
                && hay.get(i + needle.len()).is_none_or(|c| !is_word(*c))
        })
    }

    /// The chars in `[from, to)` as a string.
    pub fn slice(&self, from: usize, to: usize) -> String {
        self.chars[from.min(self.chars.len())..to.min(self.chars.len())]
            .iter()
            .collect()
    }

    /// The whole text with everything outside `keep` (char ranges) and inside `blank`
    /// replaced by spaces, newlines kept: parsers then report positions of the original file.
    pub fn blanked(&self, keep: (usize, usize), blank: &[(usize, usize)]) -> String {
        self.chars
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let kept =
                    i >= keep.0 && i < keep.1 && !blank.iter().any(|&(a, b)| i >= a && i < b);
                if kept || c == '\n' {
                    c
                } else {
                    ' '
                }
            })
            .collect()
    }

    /// The text of a 1-based line, without its newline.
    pub fn line_text(&self, line: u64) -> String {
        let l = line as usize;
        if l == 0 || l > self.line_starts.len() {
            return String::new();
        }
        let start = self.line_starts[l - 1];
        let end = self
            .line_starts
            .get(l)
            .map(|e| e - 1)
            .unwrap_or(self.chars.len());
        self.slice(start, end)
    }

    /// A SQL error at a position, with the offending line and a caret under the column.
    pub fn error(&self, line: u64, column: u64, message: impl Into<String>) -> VeloError {
        let text = self.line_text(line);
        let snippet = if text.trim().is_empty() {
            String::new()
        } else {
            let caret = " ".repeat(column.saturating_sub(1) as usize);
            format!("\n  {line:>4} | {text}\n       | {caret}^")
        };
        VeloError::Sql {
            line,
            column,
            message: message.into(),
            snippet,
        }
    }
}

/// Finds "Line: N, Column: M" in a sqlparser/DataFusion message.
pub fn position_in_message(message: &str) -> Option<(u64, u64)> {
    let at = message.find("Line: ")?;
    let rest = &message[at + 6..];
    let line: u64 = rest
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    let col_at = rest.find("Column: ")?;
    let column: u64 = rest[col_at + 8..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some((line, column))
}

/// Edit distance, for "did you mean" suggestions: insertions, deletions, substitutions and
/// swaps of two adjacent chars (the commonest typo, `wacth`) each cost 1.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // rows[i][j]: the distance between a[..i] and b[..j].
    let mut rows = vec![(0..=b.len()).collect::<Vec<usize>>()];
    for i in 1..=a.len() {
        let mut row = vec![i];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[i - 1][j - 1] + cost)
                .min(rows[i - 1][j] + 1)
                .min(row[j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[i - 2][j - 2] + 1);
            }
            row.push(d);
        }
        rows.push(row);
    }
    rows[a.len()][b.len()]
}

/// The candidate nearest to `name` (case-insensitive), if it is close enough to be a typo.
pub fn nearest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = name.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (edit_distance(&lower, &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= (c.len().max(3) / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_positions_and_blanks() {
        let t = SourceText::new("ab\ncdé\nf");
        assert_eq!(t.index(2, 3), 5);
        assert_eq!(t.blanked((3, 6), &[(4, 5)]), "  \nc é\n ");
        assert_eq!(
            position_in_message("Expected x, found: y at Line: 3, Column: 14"),
            Some((3, 14))
        );
        assert_eq!(nearest("pricee", ["price", "symbol"]), Some("price"));
        assert_eq!(nearest("zzz", ["price", "symbol"]), None);
        assert_eq!(edit_distance("wacth", "watch"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(nearest("wacth", ["path", "watch"]), Some("watch"));
    }
}
