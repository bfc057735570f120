//! The resource paths of the C2SP tlog-tiles API, parsed and printed in their one canonical
//! form (docs/api.md, "Tiles").
//!
//! A tile path is `<L>/<N>[.p/<W>]` (hash tiles) or `entries/<N>[.p/<W>]` (entry bundles),
//! after `/tile/`. `<L>` is 0 to 63 and `<W>` 1 to 255, both decimal with no leading zero;
//! `<N>` is written in 3-digit groups, every group but the last prefixed by `x`
//! (`x001/x234/067` is 1,234,067), with no leading all-zero group. Exactly one spelling is
//! accepted for each tile: [`TilePath::parse`] refuses everything that
//! [`TilePath::to_string`] would not print, so a cache or a mirror never holds one tile
//! under two names.

use std::fmt;

/// Hashes (or entries) in a full tile.
pub const TILE_WIDTH: u16 = 256;

/// The longest tile path accepted: `entries/` plus the 7 groups of `u64::MAX` and `.p/255`
/// fit well within it, so anything longer is malformed without being looked at.
const MAX_PATH_LEN: usize = 64;

/// What a tile holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TileKind {
    /// Merkle tree hashes of tile level `L`, i.e. the nodes of tree level `8·L`.
    Hashes { level: u8 },
    /// The log's entries (events), as big-endian uint16 length-prefixed records.
    Entries,
}

/// One tile or entry bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TilePath {
    pub kind: TileKind,
    /// The tile's index `N` within its level.
    pub index: u64,
    /// Its width: [`TILE_WIDTH`] for a full tile, 1 to 255 for a partial one.
    pub width: u16,
}

/// Why a path names no tile.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("a tile path is at most {MAX_PATH_LEN} characters")]
    TooLong,
    #[error("the tile level must be `entries` or a number from 0 to 63 without leading zeros")]
    Level,
    #[error(
        "the tile index must be 3-digit groups, all but the last prefixed by `x`, without a leading zero group"
    )]
    Index,
    #[error("the tile index does not fit in 64 bits")]
    IndexOverflow,
    #[error("a partial tile width (after `.p/`) must be a number from 1 to 255 without leading zeros")]
    Width,
}

impl TilePath {
    /// Parses the part of a tile path after `tile/`, accepting only the canonical form.
    pub fn parse(path: &str) -> Result<Self, PathError> {
        if path.len() > MAX_PATH_LEN {
            return Err(PathError::TooLong);
        }
        let (head, rest) = path.split_once('/').ok_or(PathError::Index)?;
        let kind = if head == "entries" {
            TileKind::Entries
        } else {
            TileKind::Hashes { level: small_number(head, 63).ok_or(PathError::Level)? }
        };
        let (groups, width) = match rest.split_once(".p/") {
            Some((groups, width)) => {
                let width = small_number(width, 255).filter(|w| *w >= 1).ok_or(PathError::Width)?;
                (groups, u16::from(width))
            }
            None => (rest, TILE_WIDTH),
        };
        Ok(TilePath { kind, index: parse_index(groups)?, width })
    }

    /// Whether this is a full tile (256 hashes or entries).
    pub fn is_full(&self) -> bool {
        self.width == TILE_WIDTH
    }
}

/// A decimal number from 0 to `max` with no leading zero (only `0` itself starts with `0`).
fn small_number(text: &str, max: u8) -> Option<u8> {
    let canonical = !text.is_empty()
        && text.len() <= 3
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse::<u16>().ok()).flatten().filter(|n| *n <= u16::from(max)).map(|n| n as u8)
}

/// `x001/x234/067` → 1,234,067.
fn parse_index(groups: &str) -> Result<u64, PathError> {
    let parts: Vec<&str> = groups.split('/').collect();
    let last = parts.len() - 1;
    let mut index = 0u64;
    for (at, part) in parts.iter().enumerate() {
        let digits = if at < last { part.strip_prefix('x') } else { Some(*part) };
        let digits = digits.filter(|d| d.len() == 3 && d.bytes().all(|b| b.is_ascii_digit()));
        let group = digits.and_then(|d| d.parse::<u64>().ok()).ok_or(PathError::Index)?;
        if at == 0 && at < last && group == 0 {
            return Err(PathError::Index);
        }
        index = index.checked_mul(1000).and_then(|i| i.checked_add(group)).ok_or(PathError::IndexOverflow)?;
    }
    Ok(index)
}

impl fmt::Display for TilePath {
    /// The canonical path after `tile/`, e.g. `0/x001/x234/067.p/5` or `entries/000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            TileKind::Hashes { level } => write!(f, "{level}/")?,
            TileKind::Entries => f.write_str("entries/")?,
        }
        let mut groups = vec![self.index % 1000];
        let mut rest = self.index / 1000;
        while rest > 0 {
            groups.push(rest % 1000);
            rest /= 1000;
        }
        for group in groups[1..].iter().rev() {
            write!(f, "x{group:03}/")?;
        }
        write!(f, "{:03}", groups[0])?;
        if !self.is_full() {
            write!(f, ".p/{}", self.width)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(level: u8, index: u64, width: u16) -> TilePath {
        TilePath { kind: TileKind::Hashes { level }, index, width }
    }

    #[test]
    fn the_examples_of_the_spec_parse() {
        assert_eq!(TilePath::parse("0/x001/x234/067"), Ok(hashes(0, 1_234_067, 256)));
        assert_eq!(TilePath::parse("2/000.p/1"), Ok(hashes(2, 0, 1)));
        assert_eq!(TilePath::parse("0/273.p/112"), Ok(hashes(0, 273, 112)));
        assert_eq!(TilePath::parse("63/x001/000"), Ok(hashes(63, 1000, 256)));
        assert_eq!(
            TilePath::parse("entries/x018/x446/x744/x073/x709/x551/615.p/255"),
            Ok(TilePath { kind: TileKind::Entries, index: u64::MAX, width: 255 })
        );
        assert_eq!(hashes(0, 1_234_067, 5).to_string(), "0/x001/x234/067.p/5");
        assert_eq!(TilePath { kind: TileKind::Entries, index: 7, width: 256 }.to_string(), "entries/007");
    }

    #[test]
    fn every_other_spelling_is_refused() {
        let cases: &[(&str, PathError)] = &[
            ("00/000", PathError::Level),
            ("01/000", PathError::Level),
            ("64/000", PathError::Level),
            ("+1/000", PathError::Level),
            ("-0/000", PathError::Level),
            ("data/000", PathError::Level),
            ("Entries/000", PathError::Level),
            ("8", PathError::Index),
            ("0/", PathError::Index),
            ("0/1", PathError::Index),
            ("0/0001", PathError::Index),
            ("0/x000/001", PathError::Index),
            ("0/x001/x000", PathError::Index),
            ("0/001/001", PathError::Index),
            ("0/X001/001", PathError::Index),
            ("0/x01/001", PathError::Index),
            ("0/x001//001", PathError::Index),
            ("0/x001/001/", PathError::Index),
            ("0/+01", PathError::Index),
            ("0/0x1", PathError::Index),
            ("0/001.p", PathError::Index),
            ("0/001.p/1/2", PathError::Width),
            ("0/001.p/0", PathError::Width),
            ("0/001.p/256", PathError::Width),
            ("0/001.p/01", PathError::Width),
            ("0/001.p/", PathError::Width),
            ("0/001.p/x1", PathError::Width),
            ("0/001.p/1.p/2", PathError::Width),
            ("0/x001.p/1/001", PathError::Width),
            ("0/x018/x446/x744/x073/x709/x551/616", PathError::IndexOverflow),
            ("entries/x999/x999/x999/x999/x999/x999/x999/999", PathError::IndexOverflow),
            ("0/x001/x001/x001/x001/x001/x001/x001/x001/x001/x001/x001/x001/x001/001", PathError::TooLong),
        ];
        for (path, error) in cases {
            assert_eq!(TilePath::parse(path).as_ref(), Err(error), "{path}");
        }
    }

    /// The same tile in the Go sumdb spelling `tlog_tiles` reads and prints: tile height 8,
    /// `data` for entries.
    fn sumdb_path(ours: &str) -> String {
        match ours.strip_prefix("entries/") {
            Some(rest) => format!("tile/8/data/{rest}"),
            None => format!("tile/8/{ours}"),
        }
    }

    /// What `tlog_tiles` makes of a path: `None` if it refuses it (or panics on it, as it does
    /// on a width of 0 or a level over 63).
    fn sumdb_parse(ours: &str) -> Option<TilePath> {
        let path = sumdb_path(ours);
        let tile = std::panic::catch_unwind(|| tlog_tiles::tile::Tile::from_path(&path)).ok()?.ok()?;
        assert_eq!(tile.height(), 8);
        let kind = if tile.is_data() { TileKind::Entries } else { TileKind::Hashes { level: tile.level() } };
        Some(TilePath { kind, index: tile.level_index(), width: u16::try_from(tile.width()).ok()? })
    }

    fn any_tile() -> impl Strategy<Value = TilePath> {
        let kind =
            prop_oneof![Just(TileKind::Entries), (0u8..64).prop_map(|level| TileKind::Hashes { level })];
        let index = prop_oneof![0u64..2000, 0u64..1_000_000_000, any::<u64>()];
        let width = prop_oneof![Just(TILE_WIDTH), 1u16..256];
        (kind, index, width).prop_map(|(kind, index, width)| TilePath { kind, index, width })
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn printed_paths_parse_back(tile in any_tile()) {
            prop_assert_eq!(TilePath::parse(&tile.to_string()), Ok(tile));
        }

        /// `tlog_tiles` limits paths to 52 characters, so the comparison keeps to indexes of
        /// at most 5 groups.
        #[test]
        fn printed_paths_are_those_of_tlog_tiles(tile in any_tile()) {
            let tile = TilePath { index: tile.index % 1_000_000_000_000_000, ..tile };
            let is_data = tile.kind == TileKind::Entries;
            let level = match tile.kind { TileKind::Hashes { level } => level, TileKind::Entries => 0 };
            let theirs = tlog_tiles::tile::Tile::new(8, level, tile.index, u32::from(tile.width), is_data);
            prop_assert_eq!(theirs.path(), sumdb_path(&tile.to_string()));
            prop_assert_eq!(sumdb_parse(&tile.to_string()), Some(tile));
        }

        /// On path-like text, accepted or refused exactly as `tlog_tiles` accepts or refuses
        /// it, and parsed to the same tile.
        #[test]
        fn parsing_agrees_with_tlog_tiles(
            path in "(entries|[0-9+-]{1,3})/(x?[0-9]{1,4}/){0,4}x?[0-9]{1,4}(\\.p/[0-9]{1,3})?",
        ) {
            prop_assert_eq!(TilePath::parse(&path).ok(), sumdb_parse(&path), "{}", path);
        }
    }
}
