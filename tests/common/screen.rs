//! What an operator's SOL client shows: the serial byte stream rendered by a
//! VT100 emulator (crate `vt100`) on an 80x25 screen. Tests assert rows of
//! this screen, never substrings of the byte stream: a menu whose every
//! character arrives twice still contains "Press [Tab] to edit" in the stream
//! (docs/consoles.md, BRIEF "Firmware and console facts").

/// The size of an IPMI SOL client's window.
pub const ROWS: u16 = 25;
pub const COLS: u16 = 80;

/// An 80x25 terminal without scrollback: the `vt100` crate, plus the one
/// thing it leaves out that menu.c32 uses over a serial line, the DEC
/// line-drawing character set (`ESC ) 0` designates it as G1, SO and SI
/// switch to and from it): without it the menu's frame reads `lqqqk`.
pub struct Terminal {
    parser: vt100::Parser,
    charsets: Charsets,
}

impl Terminal {
    pub fn new() -> Terminal {
        Terminal {
            parser: vt100::Parser::new(ROWS, COLS, 0),
            charsets: Charsets::default(),
        }
    }

    pub fn process(&mut self, bytes: &[u8]) {
        let bytes = self.charsets.translate(bytes);
        self.parser.process(&bytes);
    }

    pub fn screen(&self) -> Screen {
        Screen {
            rows: self.parser.screen().rows(0, COLS).collect(),
        }
    }
}

/// Where the byte stream is, as far as character sets go.
#[derive(Default)]
struct Charsets {
    /// SO (0x0e) is in force: G1 is used.
    shifted: bool,
    /// G1 is the DEC special graphics set (`ESC ) 0`).
    g1_graphics: bool,
    escape: Escape,
}

#[derive(Default, PartialEq)]
enum Escape {
    #[default]
    None,
    /// After ESC.
    Start,
    /// After `ESC )`: the next byte names G1's set.
    G1,
    /// Inside `ESC [ …`, until its final byte.
    Csi,
}

impl Charsets {
    /// `bytes` with SO/SI removed and, while G1 is DEC graphics and shifted
    /// in, the drawing characters turned into the Unicode they stand for.
    /// Escape sequences pass through untouched (their final bytes are in the
    /// same range as the drawing characters).
    fn translate(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        for &b in bytes {
            let pass = match (&self.escape, b) {
                (_, 0x1b) => {
                    self.escape = Escape::Start;
                    true
                }
                (Escape::Start, b')') => {
                    self.escape = Escape::G1;
                    true
                }
                (Escape::Start, b'[') => {
                    self.escape = Escape::Csi;
                    true
                }
                (Escape::Start, b'(' | b'%' | b'#') => true,
                (Escape::G1, set) => {
                    self.g1_graphics = set == b'0';
                    self.escape = Escape::None;
                    true
                }
                (Escape::Csi, 0x40..=0x7e) | (Escape::Start, _) => {
                    self.escape = Escape::None;
                    true
                }
                (Escape::Csi, _) => true,
                (Escape::None, 0x0e | 0x0f) => {
                    self.shifted = b == 0x0e;
                    continue;
                }
                (Escape::None, _) => false,
            };
            match dec_graphic(b).filter(|_| !pass && self.shifted && self.g1_graphics) {
                Some(c) => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                None => out.push(b),
            }
        }
        out
    }
}

/// The DEC special graphics character for `b` (0x60-0x7e), as xterm shows it.
fn dec_graphic(b: u8) -> Option<char> {
    const TABLE: &str = "◆▒␉␌␍␊°±␤␋┘┐┌└┼⎺⎻─⎼⎽├┤┴┬│≤≥π≠£·";
    TABLE.chars().nth(usize::from(b.checked_sub(0x60)?))
}

/// One moment of the screen: 25 rows of at most 80 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Screen {
    pub rows: Vec<String>,
}

impl Screen {
    /// How many times `text` appears on the screen (each row searched alone).
    pub fn count(&self, text: &str) -> usize {
        self.rows.iter().map(|r| r.matches(text).count()).sum()
    }

    /// How many times `text` appears when the rows are read as one line
    /// wrapping at column 80, as a long command line does.
    pub fn count_wrapped(&self, text: &str) -> usize {
        let width = usize::from(COLS);
        let joined: String = self.rows.iter().map(|r| format!("{r:<width$}")).collect();
        joined.matches(text).count()
    }

    /// The rows that hold `text`, by index.
    pub fn rows_with(&self, text: &str) -> Vec<usize> {
        (0..self.rows.len())
            .filter(|&i| self.rows[i].contains(text))
            .collect()
    }

    /// Rows in which a run of letters arrived twice over, as a console
    /// written both by the firmware's redirection and by the program itself
    /// shows it (`BBoooott  mmeennuu`).
    pub fn doubled_rows(&self) -> Vec<&str> {
        self.rows
            .iter()
            .filter(|r| has_doubled_run(r))
            .map(String::as_str)
            .collect()
    }

    /// The screen as a capture for messages and docs: a frame of 80 columns.
    pub fn capture(&self) -> String {
        let edge = format!("+{}+", "-".repeat(usize::from(COLS)));
        let mut out = format!("{edge}\n");
        for row in &self.rows {
            let pad = usize::from(COLS).saturating_sub(row.chars().count());
            out.push_str(&format!("|{row}{}|\n", " ".repeat(pad)));
        }
        out.push_str(&edge);
        out
    }
}

/// Four pairs of equal characters in a row (`aabbccdd`) with at least two
/// different letters or digits among them: ordinary text never has that,
/// doubled text always does (frames and rules of one repeated character do
/// not count).
pub fn has_doubled_run(row: &str) -> bool {
    let c: Vec<char> = row.chars().collect();
    c.windows(8).any(|w| {
        let pairs = [w[0], w[2], w[4], w[6]];
        let equal = (0..4).all(|i| w[2 * i] == w[2 * i + 1]);
        let alnum = pairs.iter().filter(|c| c.is_alphanumeric()).count();
        let distinct = pairs
            .iter()
            .filter(|c| c.is_alphanumeric())
            .collect::<std::collections::HashSet<_>>()
            .len();
        equal && alnum >= 3 && distinct >= 2
    })
}
