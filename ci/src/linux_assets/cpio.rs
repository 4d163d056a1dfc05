//! A writer of cpio archives in the "newc" format (magic `070701`), the
//! format Linux unpacks as an initramfs (`Documentation/driver-api/
//! early-userspace/buffer-format.rst`).
//!
//! Each entry is a 110-byte ASCII header (the magic and thirteen 8-digit
//! hexadecimal fields: ino, mode, uid, gid, nlink, mtime, filesize,
//! devmajor, devminor, rdevmajor, rdevminor, namesize, check), the name with
//! its NUL, padding to a multiple of 4, then the data padded to a multiple
//! of 4. The archive ends with an entry named `TRAILER!!!`.

/// File type bits of `st_mode`.
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// The name of the entry that ends an archive.
pub const TRAILER: &str = "TRAILER!!!";

/// An archive being written in memory. Entries owned by root, time 0.
#[derive(Debug, Default)]
pub struct CpioWriter {
    bytes: Vec<u8>,
    next_inode: u32,
}

impl CpioWriter {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory (`name` without a leading `/`), permissions `perm`.
    pub fn directory(&mut self, name: &str, perm: u32) {
        self.entry(name, S_IFDIR | (perm & 0o7777), 2, (0, 0), &[]);
    }

    /// Adds a regular file.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, S_IFREG | (perm & 0o7777), 1, (0, 0), data);
    }

    /// Adds a symbolic link to `target`.
    pub fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes());
    }

    /// Adds a character device node `major:minor`.
    pub fn char_device(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, S_IFCHR | (perm & 0o7777), 1, (major, minor), &[]);
    }

    /// Ends the archive and returns its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry(TRAILER, 0, 1, (0, 0), &[]);
        self.bytes
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        let inode = if name == TRAILER {
            0
        } else {
            self.next_inode += 1;
            self.next_inode
        };
        let size = u32::try_from(data.len()).expect("initramfs members are below 4 GiB");
        let name_size = u32::try_from(name.len() + 1).expect("short names");
        let fields = [
            inode, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, name_size, 0,
        ];
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            self.bytes
                .extend_from_slice(format!("{field:08X}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header of `bytes` at `at` split into its thirteen fields.
    fn fields(bytes: &[u8], at: usize) -> Vec<u32> {
        assert_eq!(&bytes[at..at + 6], b"070701");
        (0..13)
            .map(|i| {
                let s = std::str::from_utf8(&bytes[at + 6 + 8 * i..at + 14 + 8 * i]).unwrap();
                u32::from_str_radix(s, 16).unwrap()
            })
            .collect()
    }

    #[test]
    fn a_file_entry_is_laid_out_as_newc_says() {
        let mut w = CpioWriter::new();
        w.file("init", 0o755, b"#!/bin/sh\n");
        let bytes = w.finish();
        // 110-byte header, then "init\0" (5 bytes) ends at 115, padded to 116.
        let expected_header = "070701\
            00000001\
            000081ED\
            00000000\
            00000000\
            00000001\
            00000000\
            0000000A\
            00000000\
            00000000\
            00000000\
            00000000\
            00000005\
            00000000";
        assert_eq!(&bytes[..110], expected_header.as_bytes());
        assert_eq!(&bytes[110..116], b"init\0\0");
        // Ten data bytes at 116, padded to 128.
        assert_eq!(&bytes[116..126], b"#!/bin/sh\n");
        assert_eq!(&bytes[126..128], b"\0\0");
        // The trailer follows.
        let trailer = fields(&bytes, 128);
        assert_eq!(trailer[11], 11, "namesize of TRAILER!!! with its NUL");
        assert_eq!(&bytes[238..249], b"TRAILER!!!\0");
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(bytes.len(), 252);
    }

    #[test]
    fn devices_links_and_directories_carry_their_type_and_numbers() {
        let mut w = CpioWriter::new();
        w.directory("dev", 0o755);
        w.char_device("dev/console", 0o600, 5, 1);
        w.symlink("bin/sh", "busybox");
        let bytes = w.finish();
        let dir = fields(&bytes, 0);
        assert_eq!(dir[1], 0o040_755);
        assert_eq!(dir[4], 2, "a directory has two links");
        // "dev\0" ends at 114: padded to 116, no data.
        let console = fields(&bytes, 116);
        assert_eq!(console[0], 2, "inodes are distinct");
        assert_eq!(console[1], 0o020_600);
        assert_eq!((console[9], console[10]), (5, 1), "rdevmajor, rdevminor");
        assert_eq!(console[6], 0, "a device has no data");
        // "dev/console\0" is 12 bytes: 116 + 110 + 12 = 238, padded to 240.
        let link = fields(&bytes, 240);
        assert_eq!(link[1], 0o120_777);
        assert_eq!(link[6], 7, "a link's data is its target");
        // "bin/sh\0" ends at 240 + 117 = 357, padded to 360.
        assert_eq!(&bytes[360..367], b"busybox");
    }

    #[test]
    fn the_kernel_would_find_every_name_at_an_aligned_header() {
        // Names of every length modulo 4 keep the next header aligned.
        let mut w = CpioWriter::new();
        for name in ["a", "ab", "abc", "abcd", "abcde"] {
            w.file(name, 0o644, &vec![0x5a; name.len() + 1]);
        }
        let bytes = w.finish();
        let mut at = 0;
        let mut names = Vec::new();
        loop {
            let f = fields(&bytes, at);
            let name_end = at + 110 + f[11] as usize;
            let name = std::str::from_utf8(&bytes[at + 110..name_end - 1]).unwrap();
            names.push(name.to_string());
            let data = name_end.next_multiple_of(4);
            assert!(bytes[data..data + f[6] as usize].iter().all(|&b| b == 0x5a));
            at = (data + f[6] as usize).next_multiple_of(4);
            if name == TRAILER {
                break;
            }
        }
        assert_eq!(at, bytes.len());
        assert_eq!(names, ["a", "ab", "abc", "abcd", "abcde", TRAILER]);
    }
}
