//! A reader for the ELF program headers of a kernel file, for loading only.
//!
//! Accepts little-endian ELF32 for i386 and ELF64 for x86-64, executable or
//! position-independent (loaded as linked). Only the file header and the
//! program header table are read; section headers are ignored. Every field
//! comes from an untrusted file and is checked before use.

use super::{le16, le32, le64, LoadError, Segment};

const EI_CLASS: usize = 4;
const EI_DATA: usize = 5;
const ELFCLASS32: u8 = 1;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;
/// Program header type of a loadable segment.
pub const PT_LOAD: u32 = 1;

/// Why a file is not an ELF image the loader accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// The file does not start with the ELF magic.
    NotElf,
    /// The class byte is neither ELFCLASS32 nor ELFCLASS64.
    BadClass {
        /// The class byte.
        class: u8,
    },
    /// The image is not little-endian.
    NotLittleEndian {
        /// The data encoding byte.
        data: u8,
    },
    /// The object type is neither executable nor shared object.
    BadType {
        /// `e_type`.
        e_type: u16,
    },
    /// The machine does not match the class (i386 for ELF32, x86-64 for ELF64).
    BadMachine {
        /// The class byte.
        class: u8,
        /// `e_machine`.
        machine: u16,
    },
    /// The program header entry size is smaller than the class requires.
    BadProgramHeaderSize {
        /// `e_phentsize`.
        size: u16,
    },
    /// The program header table lies (partly) outside the file.
    ProgramHeadersOutsideFile {
        /// `e_phoff`.
        offset: u64,
        /// `e_phnum`.
        count: u16,
    },
}

/// A checked view of an ELF file's program headers.
#[derive(Clone, Copy, Debug)]
pub struct ElfFile<'a> {
    data: &'a [u8],
    is64: bool,
    entry: u64,
    phoff: u64,
    phentsize: u16,
    phnum: u16,
}

impl<'a> ElfFile<'a> {
    /// Parses and checks the file header and the program header table's
    /// bounds.
    pub fn parse(data: &'a [u8]) -> Result<Self, LoadError> {
        if data.len() < 16 || &data[..4] != b"\x7fELF" {
            return Err(ElfError::NotElf.into());
        }
        let class = data[EI_CLASS];
        let is64 = match class {
            ELFCLASS32 => false,
            ELFCLASS64 => true,
            class => return Err(ElfError::BadClass { class }.into()),
        };
        if data[EI_DATA] != ELFDATA2LSB {
            return Err(ElfError::NotLittleEndian {
                data: data[EI_DATA],
            }
            .into());
        }
        let header_len: u64 = if is64 { 64 } else { 52 };
        if (data.len() as u64) < header_len {
            return Err(LoadError::FileTooShort {
                needed: header_len,
                len: data.len() as u64,
            });
        }
        let field16 = |off| le16(data, off).ok_or(LoadError::Overflow);
        let field32 = |off| le32(data, off).ok_or(LoadError::Overflow);
        let e_type = field16(16)?;
        if e_type != ET_EXEC && e_type != ET_DYN {
            return Err(ElfError::BadType { e_type }.into());
        }
        let machine = field16(18)?;
        let expected = if is64 { EM_X86_64 } else { EM_386 };
        if machine != expected {
            return Err(ElfError::BadMachine { class, machine }.into());
        }
        let (entry, phoff, phentsize, phnum) = if is64 {
            (
                le64(data, 24).ok_or(LoadError::Overflow)?,
                le64(data, 32).ok_or(LoadError::Overflow)?,
                field16(54)?,
                field16(56)?,
            )
        } else {
            (
                u64::from(field32(24)?),
                u64::from(field32(28)?),
                field16(42)?,
                field16(44)?,
            )
        };
        let min_entry = if is64 { 56 } else { 32 };
        if phnum > 0 && phentsize < min_entry {
            return Err(ElfError::BadProgramHeaderSize { size: phentsize }.into());
        }
        let table_len = u64::from(phentsize) * u64::from(phnum);
        let table_end = phoff.checked_add(table_len);
        if table_end.is_none_or(|end| end > data.len() as u64) {
            return Err(ElfError::ProgramHeadersOutsideFile {
                offset: phoff,
                count: phnum,
            }
            .into());
        }
        Ok(Self {
            data,
            is64,
            entry,
            phoff,
            phentsize,
            phnum,
        })
    }

    /// Whether the file is ELF64.
    pub fn is64(&self) -> bool {
        self.is64
    }

    /// `e_entry` as written in the file (a virtual address).
    pub fn entry(&self) -> u64 {
        self.entry
    }

    /// The entry point as a physical address: if `e_entry` falls inside a
    /// loadable segment's virtual range, it is moved by that segment's
    /// `p_paddr - p_vaddr` (kernels linked to run high, loaded low);
    /// otherwise it is taken as is.
    pub fn physical_entry(&self) -> u64 {
        let mut entry = self.entry;
        for i in 0..self.phnum {
            if let Some(ph) = self.program_header(i) {
                if ph.p_type == PT_LOAD
                    && self.entry >= ph.vaddr
                    && self.entry - ph.vaddr < ph.mem_size
                {
                    entry = ph.paddr.wrapping_add(self.entry - ph.vaddr);
                    break;
                }
            }
        }
        entry
    }

    fn program_header(&self, index: u16) -> Option<ProgramHeader> {
        let base = self.phoff + u64::from(index) * u64::from(self.phentsize);
        let d = self.data;
        if self.is64 {
            Some(ProgramHeader {
                p_type: le32(d, base)?,
                offset: le64(d, base + 8)?,
                vaddr: le64(d, base + 16)?,
                paddr: le64(d, base + 24)?,
                file_size: le64(d, base + 32)?,
                mem_size: le64(d, base + 40)?,
            })
        } else {
            Some(ProgramHeader {
                p_type: le32(d, base)?,
                offset: u64::from(le32(d, base + 4)?),
                vaddr: u64::from(le32(d, base + 8)?),
                paddr: u64::from(le32(d, base + 12)?),
                file_size: u64::from(le32(d, base + 16)?),
                mem_size: u64::from(le32(d, base + 20)?),
            })
        }
    }

    /// Calls `f` with every PT_LOAD segment that occupies memory, loaded at
    /// its `p_paddr`.
    pub(crate) fn for_each_load_segment(
        &self,
        mut f: impl FnMut(Segment) -> Result<(), LoadError>,
    ) -> Result<(), LoadError> {
        for index in 0..self.phnum {
            // The table was checked to lie inside the file.
            let ph = self.program_header(index).ok_or(LoadError::Overflow)?;
            if ph.p_type != PT_LOAD || (ph.mem_size == 0 && ph.file_size == 0) {
                continue;
            }
            f(Segment {
                index,
                paddr: ph.paddr,
                file_offset: ph.offset,
                file_size: ph.file_size,
                mem_size: ph.mem_size,
            })?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct ProgramHeader {
    p_type: u32,
    offset: u64,
    vaddr: u64,
    paddr: u64,
    file_size: u64,
    mem_size: u64,
}
