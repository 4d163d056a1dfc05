//! Finding the parent of a differencing image: the integrator's
//! [`ParentResolver`], the request it gets (parent UUID, name) and the path
//! hints decoded from the child's parent locators.

use crate::format::{LocatorCode, Uuid};

/// What is known about a parent being looked for.
#[derive(Clone, Copy, Debug)]
pub struct ParentRequest<'a> {
    /// UUID the parent's footer must carry (checked by the caller of the
    /// resolver; a device with another UUID is skipped).
    pub uuid: Uuid,
    /// Parent modification time recorded in the child.
    pub timestamp: u32,
    /// Parent file name recorded in the child (UTF-16, without padding).
    pub name: &'a [u16],
    /// Number of images already in the chain (1 when looking for the top
    /// image's parent).
    pub depth: usize,
}

/// A path hint decoded from a parent locator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocatorHint<'a> {
    /// Locator slot (0..8).
    pub slot: u8,
    /// Platform code of the locator.
    pub code: LocatorCode,
    /// The path, decoded to UTF-8: a Windows path with backslashes for
    /// `W2ku`/`W2ru`/`Wi2k`/`Wi2r`, a plain path (URL scheme removed,
    /// percent escapes decoded) for `MacX`.
    pub path: &'a str,
}

/// Opens parent images on behalf of a differencing child.
///
/// [`crate::Disk::open`] calls `open_parent` once per usable locator hint,
/// relative paths first (`W2ru`, then `W2ku`, `MacX`, `Wi2r`, `Wi2k`), then
/// once without hint. The first device whose footer carries the requested
/// UUID becomes the parent; devices with another UUID are dropped.
pub trait ParentResolver<D> {
    /// A device that may hold the parent, or `None`.
    fn open_parent(
        &mut self,
        request: &ParentRequest<'_>,
        hint: Option<&LocatorHint<'_>>,
    ) -> Option<D>;
}

/// A resolver for images without parents: finds nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoParents;

impl<D> ParentResolver<D> for NoParents {
    fn open_parent(&mut self, _: &ParentRequest<'_>, _: Option<&LocatorHint<'_>>) -> Option<D> {
        None
    }
}

/// Order in which locator codes are tried (lower first).
pub(crate) fn hint_rank(code: LocatorCode) -> Option<u8> {
    match code {
        LocatorCode::W2ru => Some(0),
        LocatorCode::W2ku => Some(1),
        LocatorCode::MacX => Some(2),
        LocatorCode::Wi2r => Some(3),
        LocatorCode::Wi2k => Some(4),
        _ => None,
    }
}

fn put_bytes(s: &[u8], out: &mut [u8], at: usize) -> Option<usize> {
    let end = at.checked_add(s.len())?;
    out.get_mut(at..end)?.copy_from_slice(s);
    Some(end)
}

/// Decodes a locator's raw data into `out` as UTF-8; `None` if the code is
/// not a path code, the data is not valid text, or `out` is too small.
pub fn decode_locator<'o>(code: LocatorCode, raw: &[u8], out: &'o mut [u8]) -> Option<&'o str> {
    // The 8-bit codes end at the first NUL; their bytes must be UTF-8.
    let text = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
    let mut n = 0;
    match code {
        LocatorCode::W2ku | LocatorCode::W2ru => {
            if !raw.len().is_multiple_of(2) {
                return None;
            }
            let units = raw
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&u| u != 0);
            for c in char::decode_utf16(units) {
                let c = c.ok()?;
                let mut tmp = [0u8; 4];
                n = put_bytes(c.encode_utf8(&mut tmp).as_bytes(), out, n)?;
            }
        }
        // Copied as they are; the text is checked once, in `out`.
        LocatorCode::Wi2k | LocatorCode::Wi2r => n = put_bytes(text, out, 0)?,
        LocatorCode::MacX => {
            // Checked before percent decoding, which could make text of
            // bytes that are not.
            core::str::from_utf8(text).ok()?;
            let b = text.strip_prefix(b"file://").unwrap_or(text);
            let b = b.strip_prefix(b"localhost").unwrap_or(b);
            let mut i = 0;
            while i < b.len() {
                let byte = if b[i] == b'%' && i + 2 < b.len() {
                    // The two characters after `%` as a base-16 `u8`, as
                    // `u8::from_str_radix` reads them: two hex digits, or
                    // `+` and one.
                    let digit = |d: u8| char::from(d).to_digit(16);
                    let value = match (b[i + 1], b[i + 2]) {
                        (b'+', low) => digit(low)?,
                        (high, low) => digit(high)? * 16 + digit(low)?,
                    };
                    i += 3;
                    value as u8
                } else {
                    i += 1;
                    b[i - 1]
                };
                *out.get_mut(n)? = byte;
                n += 1;
            }
        }
        _ => return None,
    }
    core::str::from_utf8(out.get(..n)?).ok()
}

#[cfg(feature = "std")]
pub use file_resolver::{FileResolver, ParentPaths};

#[cfg(feature = "std")]
mod file_resolver {
    use super::{LocatorHint, ParentRequest, ParentResolver};
    use crate::device::FileDevice;
    use crate::format::LocatorCode;
    use std::path::{Path, PathBuf};

    /// Finds parents as files: relative hints and the parent name are taken
    /// relative to the child's directory; absolute Windows paths fall back
    /// to their file name in that directory.
    #[derive(Clone, Debug)]
    pub struct FileResolver {
        /// Directory of the top image.
        pub base_dir: PathBuf,
        /// Open parents read-write.
        pub writable: bool,
    }

    impl FileResolver {
        /// A resolver relative to the directory holding `child`.
        pub fn for_child(child: &Path, writable: bool) -> Self {
            let base_dir = child
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."));
            FileResolver { base_dir, writable }
        }

        fn candidate(&self, hint: &LocatorHint<'_>) -> Option<PathBuf> {
            match hint.code {
                LocatorCode::MacX => {
                    let p = Path::new(hint.path);
                    Some(if p.is_absolute() {
                        p.to_path_buf()
                    } else {
                        self.base_dir.join(p)
                    })
                }
                LocatorCode::W2ru | LocatorCode::Wi2r => {
                    let unix = hint.path.replace('\\', "/");
                    let rel = unix.trim_start_matches("./");
                    Some(self.base_dir.join(rel))
                }
                LocatorCode::W2ku | LocatorCode::Wi2k => {
                    let unix = hint.path.replace('\\', "/");
                    if unix.starts_with('/') {
                        let p = PathBuf::from(&unix);
                        if p.exists() {
                            return Some(p);
                        }
                    }
                    let name = unix.rsplit('/').next()?;
                    Some(self.base_dir.join(name))
                }
                _ => None,
            }
        }
    }

    impl ParentResolver<FileDevice> for FileResolver {
        fn open_parent(
            &mut self,
            request: &ParentRequest<'_>,
            hint: Option<&LocatorHint<'_>>,
        ) -> Option<FileDevice> {
            let path = match hint {
                Some(h) => self.candidate(h)?,
                None => {
                    let name = std::string::String::from_utf16(request.name).ok()?;
                    if name.is_empty() {
                        return None;
                    }
                    self.base_dir.join(name.replace('\\', "/"))
                }
            };
            FileDevice::open(&path, self.writable).ok()
        }
    }

    /// The paths a differencing child records for its parent file, so that
    /// [`FileResolver`] finds it again: relative to the child's folder (the
    /// hint tried first), absolute, and the parent's file name.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct ParentPaths {
        /// The parent's path relative to the child's folder, `/`-separated.
        pub relative: std::string::String,
        /// The parent's absolute path.
        pub absolute: std::string::String,
        /// The parent's file name.
        pub name: std::string::String,
    }

    impl ParentPaths {
        /// The paths for a child to be made at `child` over the file
        /// `parent`. The parent and the child's folder must exist (both are
        /// resolved to canonical paths).
        pub fn new(child: &Path, parent: &Path) -> std::io::Result<Self> {
            let parent = parent.canonicalize()?;
            let child_dir = match child.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
                _ => PathBuf::from("."),
            }
            .canonicalize()?;
            Ok(Self {
                relative: relative_path(&child_dir, &parent),
                absolute: parent.to_string_lossy().into_owned(),
                name: parent
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            })
        }

        /// The link [`crate::create::create_differencing`] records.
        pub fn link(&self) -> crate::create::ParentLink<'_> {
            crate::create::ParentLink {
                relative_path: &self.relative,
                absolute_path: Some(&self.absolute),
                name: &self.name,
            }
        }
    }

    /// The path from the folder `from` to `to`, both absolute, as
    /// `/`-separated components with `..` for each folder left.
    pub(super) fn relative_path(from: &Path, to: &Path) -> std::string::String {
        use std::{string::ToString, vec, vec::Vec};
        let from: Vec<_> = from.components().collect();
        let to: Vec<_> = to.components().collect();
        let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
        let mut parts = vec!["..".to_string(); from.len() - common];
        parts.extend(
            to[common..]
                .iter()
                .map(|c| c.as_os_str().to_string_lossy().into_owned()),
        );
        parts.join("/")
    }
}

#[cfg(test)]
mod tests {
    #[cfg(feature = "std")]
    #[test]
    fn relative_paths_climb_then_descend() {
        use super::file_resolver::relative_path;
        use std::path::Path;
        assert_eq!(
            relative_path(Path::new("/a/b"), Path::new("/a/d/p.vhd")),
            "../d/p.vhd"
        );
        assert_eq!(
            relative_path(Path::new("/a/b"), Path::new("/a/b/p.vhd")),
            "p.vhd"
        );
        assert_eq!(
            relative_path(Path::new("/x/y/z"), Path::new("/p.vhd")),
            "../../../p.vhd"
        );
    }

    use super::*;

    fn utf16le(s: &str) -> std::vec::Vec<u8> {
        s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
    }

    #[test]
    fn windows_locators_are_utf16le() {
        let mut out = [0u8; 64];
        let raw = utf16le(".\\bäse 😀.vhd");
        assert_eq!(
            decode_locator(LocatorCode::W2ru, &raw, &mut out),
            Some(".\\bäse 😀.vhd")
        );
        // Trailing NULs end the path.
        let mut raw = utf16le("C:\\a.vhd");
        raw.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(
            decode_locator(LocatorCode::W2ku, &raw, &mut out),
            Some("C:\\a.vhd")
        );
        // A lone surrogate, an odd length, a too small buffer: no hint.
        assert_eq!(
            decode_locator(LocatorCode::W2ku, &[0x00, 0xD8], &mut out),
            None
        );
        assert_eq!(
            decode_locator(LocatorCode::W2ku, &[b'a', 0, b'b'], &mut out),
            None
        );
        assert_eq!(
            decode_locator(LocatorCode::W2ku, &utf16le("abcdef"), &mut out[..3]),
            None
        );
    }

    #[test]
    fn macx_locators_are_file_urls() {
        let mut out = [0u8; 64];
        assert_eq!(
            decode_locator(LocatorCode::MacX, b"file:///srv/my%20disk.vhd", &mut out),
            Some("/srv/my disk.vhd")
        );
        assert_eq!(
            decode_locator(LocatorCode::MacX, b"file://localhost/a.vhd\0\0", &mut out),
            Some("/a.vhd")
        );
        // Escapes are two hex digits of either case, high digit first
        // (RFC 3986, 2.1); the bytes they make are UTF-8 (3.2.2).
        assert_eq!(
            decode_locator(LocatorCode::MacX, b"/a%2Fb%2fc/caf%C3%a9", &mut out),
            Some("/a/b/c/caf\u{e9}")
        );
        // Bad escapes and invalid UTF-8 give no hint; a '%' at the end is kept.
        assert_eq!(
            decode_locator(LocatorCode::MacX, b"file:///%zz", &mut out),
            None
        );
        assert_eq!(
            decode_locator(LocatorCode::MacX, b"file:///%ff", &mut out),
            None
        );
        assert_eq!(
            decode_locator(LocatorCode::MacX, b"/a%", &mut out),
            Some("/a%")
        );
        assert_eq!(
            decode_locator(LocatorCode::MacX, b"/a%4", &mut out),
            Some("/a%4")
        );
        assert_eq!(decode_locator(LocatorCode::Mac, b"alias", &mut out), None);
    }
}
