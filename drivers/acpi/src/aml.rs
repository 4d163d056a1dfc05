//! A small encoder for ACPI Machine Language (ACPI 6.5, chapter 20), enough
//! for a DSDT describing a PC: name strings, integers, strings, EISA ids,
//! `Name`, `Scope`, `Device`, `Method` with `Return`, packages and buffers,
//! and resource templates (chapter 6.4: I/O, IRQ, Memory32Fixed, Word/DWord/
//! QWord address space and extended interrupt descriptors).
//!
//! Everything is written into a caller-provided buffer; running out of room
//! is an error, never a panic. Package lengths are encoded in the fewest
//! bytes, as ASL compilers do: the body is written first and moved up by the
//! size of its length prefix once that size is known.

use crate::AcpiError;

/// `ZeroOp`.
pub const ZERO_OP: u8 = 0x00;
/// `OneOp`.
pub const ONE_OP: u8 = 0x01;
/// `NameOp`.
pub const NAME_OP: u8 = 0x08;
/// `BytePrefix`.
pub const BYTE_PREFIX: u8 = 0x0a;
/// `WordPrefix`.
pub const WORD_PREFIX: u8 = 0x0b;
/// `DWordPrefix`.
pub const DWORD_PREFIX: u8 = 0x0c;
/// `StringPrefix`.
pub const STRING_PREFIX: u8 = 0x0d;
/// `QWordPrefix`.
pub const QWORD_PREFIX: u8 = 0x0e;
/// `ScopeOp`.
pub const SCOPE_OP: u8 = 0x10;
/// `BufferOp`.
pub const BUFFER_OP: u8 = 0x11;
/// `PackageOp`.
pub const PACKAGE_OP: u8 = 0x12;
/// `MethodOp`.
pub const METHOD_OP: u8 = 0x14;
/// `DualNamePrefix`.
pub const DUAL_NAME_PREFIX: u8 = 0x2e;
/// `MultiNamePrefix`.
pub const MULTI_NAME_PREFIX: u8 = 0x2f;
/// `ExtOpPrefix`.
pub const EXT_OP_PREFIX: u8 = 0x5b;
/// `DeviceOp` (after `ExtOpPrefix`).
pub const DEVICE_OP: u8 = 0x82;
/// `RootChar`.
pub const ROOT_CHAR: u8 = b'\\';
/// `ParentPrefixChar`.
pub const PARENT_PREFIX_CHAR: u8 = b'^';
/// `ReturnOp`.
pub const RETURN_OP: u8 = 0xa4;
/// `OnesOp`.
pub const ONES_OP: u8 = 0xff;
/// The largest package length the encoding carries (28 bits).
pub const MAX_PKG_LENGTH: usize = (1 << 28) - 1;

/// Encodes a PkgLength for a body of `body_len` bytes; the encoded value
/// counts its own bytes. Returns the bytes and how many are used.
pub fn pkg_length(body_len: usize) -> Result<([u8; 4], usize), AcpiError> {
    // One byte carries 6 bits of length, each further byte 8 more after
    // the lead byte's 4.
    let n = match body_len {
        l if l < 0x40 - 1 => 1,
        l if l < (1 << 12) - 2 => 2,
        l if l < (1 << 20) - 3 => 3,
        l if l < (1 << 28) - 4 => 4,
        _ => return Err(AcpiError::PackageTooLong { len: body_len }),
    };
    let total = (body_len + n) as u32;
    let encoded = if n == 1 {
        total
    } else {
        ((total >> 4) << 8) | ((n as u32 - 1) << 6) | (total & 0xf)
    };
    Ok((encoded.to_le_bytes(), n))
}

/// Compresses a seven-character EISA id ("PNP0A03") into its 32-bit form as
/// the ASL `EisaId` macro does: three letters of 5 bits, four hex digits,
/// stored big-endian.
pub fn eisa_id(id: &str) -> Result<u32, AcpiError> {
    let b = id.as_bytes();
    if b.len() != 7 {
        return Err(AcpiError::BadEisaId);
    }
    let mut v: u32 = 0;
    for &c in &b[..3] {
        if !c.is_ascii_uppercase() {
            return Err(AcpiError::BadEisaId);
        }
        v = (v << 5) | u32::from(c - 0x40);
    }
    for &c in &b[3..] {
        let digit = (c as char).to_digit(16).ok_or(AcpiError::BadEisaId)?;
        if c.is_ascii_lowercase() {
            return Err(AcpiError::BadEisaId);
        }
        v = (v << 4) | digit;
    }
    // 15 bits of letters and 16 of digits: bit 31 stays 0.
    Ok(v.swap_bytes())
}

/// An AML byte stream being written into a fixed buffer.
pub struct Aml<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Aml<'a> {
    /// An empty stream over `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, len: 0 }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Appends raw bytes. Out of line: every opcode, constant and
    /// descriptor goes through here.
    #[inline(never)]
    pub fn raw(&mut self, bytes: &[u8]) -> Result<(), AcpiError> {
        let end = self
            .len
            .checked_add(bytes.len())
            .ok_or(self.full(usize::MAX))?;
        let capacity = self.buf.len();
        let dst = self
            .buf
            .get_mut(self.len..end)
            .ok_or(AcpiError::BufferTooSmall {
                needed: end,
                capacity,
            })?;
        dst.copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    fn full(&self, needed: usize) -> AcpiError {
        AcpiError::BufferTooSmall {
            needed,
            capacity: self.buf.len(),
        }
    }

    /// Inserts `bytes` at `at`, moving what follows up.
    fn insert(&mut self, at: usize, bytes: &[u8]) -> Result<(), AcpiError> {
        let end = self
            .len
            .checked_add(bytes.len())
            .ok_or(self.full(usize::MAX))?;
        if end > self.buf.len() {
            return Err(self.full(end));
        }
        self.buf.copy_within(at..self.len, at + bytes.len());
        self.buf[at..at + bytes.len()].copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    /// Writes `opcode`, then, inside the package that follows, the name
    /// string `path` and the bytes `head`; returns where the package starts
    /// (for [`Aml::close_pkg_length`]). Out of line: scopes, devices and
    /// methods open this way.
    #[inline(never)]
    fn open_named(&mut self, opcode: &[u8], path: &str, head: &[u8]) -> Result<usize, AcpiError> {
        self.raw(opcode)?;
        let start = self.len;
        self.name_string(path)?;
        self.raw(head)?;
        Ok(start)
    }

    /// `NameOp` and the name string `path`: the start of every `Name`, out
    /// of line so that each caller checks one result.
    #[inline(never)]
    fn name_head(&mut self, path: &str) -> Result<(), AcpiError> {
        self.raw(&[NAME_OP])?;
        self.name_string(path)
    }

    /// Puts the PkgLength of what was written from `start` on, plus the
    /// bytes `trailer` adds, at `start`, followed by those bytes.
    /// Out of line: every package, buffer, device, scope and method closes
    /// this way.
    #[inline(never)]
    fn close_pkg_length(&mut self, start: usize, trailer: Trailer) -> Result<(), AcpiError> {
        let body_len = self.len - start;
        let (extra, extra_len) = match trailer {
            Trailer::None => ([0; 9], 0),
            Trailer::ElementCount(count) => {
                let mut extra = [0; 9];
                extra[0] = count;
                (extra, 1)
            }
            Trailer::BufferSize => integer_encoding(body_len as u64),
        };
        let (length, n) = pkg_length(body_len + extra_len)?;
        // Whole-array copies: the lengths only choose how much is inserted.
        let mut prefix = [0u8; 4 + 9];
        prefix[..4].copy_from_slice(&length);
        prefix[n..n + 9].copy_from_slice(&extra);
        self.insert(start, &prefix[..n + extra_len])
    }

    /// Writes a name string: an optional `\` or `^` prefixes, then segments
    /// of up to four characters separated by dots (shorter ones padded with
    /// `_`), e.g. `\_SB_.PCI0`, `_HID`, `^COM1`.
    pub fn name_string(&mut self, path: &str) -> Result<(), AcpiError> {
        let bytes = path.as_bytes();
        let mut rest = bytes;
        while let Some((&c, tail)) = rest.split_first() {
            if c != ROOT_CHAR && c != PARENT_PREFIX_CHAR {
                break;
            }
            if c == ROOT_CHAR && rest.len() != bytes.len() {
                return Err(AcpiError::BadName {
                    position: bytes.len() - rest.len(),
                });
            }
            self.raw(&[c])?;
            rest = tail;
        }
        let prefix_len = bytes.len() - rest.len();
        if rest.is_empty() {
            // NullName: only meaningful after a prefix.
            return if prefix_len > 0 {
                self.raw(&[0])
            } else {
                Err(AcpiError::BadName { position: 0 })
            };
        }
        let count = rest.split(|&b| b == b'.').count();
        match count {
            1 => {}
            2 => self.raw(&[DUAL_NAME_PREFIX])?,
            3..=255 => self.raw(&[MULTI_NAME_PREFIX, count as u8])?,
            _ => {
                return Err(AcpiError::BadName {
                    position: bytes.len(),
                })
            }
        }
        let mut position = prefix_len;
        for segment in rest.split(|&b| b == b'.') {
            self.raw(&name_seg(segment, position)?)?;
            position += segment.len() + 1;
        }
        Ok(())
    }

    /// Writes an integer in its shortest form (`ZeroOp`, `OneOp`, `OnesOp`
    /// or a Byte/Word/DWord/QWord constant).
    pub fn integer(&mut self, value: u64) -> Result<(), AcpiError> {
        let (bytes, len) = integer_encoding(value);
        self.raw(&bytes[..len])
    }

    /// Writes a 32-bit constant with its DWord prefix whatever its value
    /// (as `EisaId` values and `_PRT` addresses are written).
    pub fn dword(&mut self, value: u32) -> Result<(), AcpiError> {
        self.raw(&[DWORD_PREFIX])?;
        self.raw(&value.to_le_bytes())
    }

    /// Writes an ASCII string constant (no NUL inside).
    pub fn string(&mut self, s: &str) -> Result<(), AcpiError> {
        if !s.is_ascii() || s.bytes().any(|b| b == 0) {
            return Err(AcpiError::BadString);
        }
        self.raw(&[STRING_PREFIX])?;
        self.raw(s.as_bytes())?;
        self.raw(&[0])
    }

    /// Writes a compressed EISA id ("PNP0A03") as a DWord constant.
    pub fn eisa_id(&mut self, id: &str) -> Result<(), AcpiError> {
        self.dword(eisa_id(id)?)
    }

    /// `Name(path, value)`: `value` writes one data object.
    pub fn name(
        &mut self,
        path: &str,
        value: impl FnOnce(&mut Self) -> Result<(), AcpiError>,
    ) -> Result<(), AcpiError> {
        self.name_head(path)?;
        value(self)
    }

    /// `Scope(path) { body }`.
    pub fn scope(
        &mut self,
        path: &str,
        body: impl FnOnce(&mut Self) -> Result<(), AcpiError>,
    ) -> Result<(), AcpiError> {
        let start = self.open_named(&[SCOPE_OP], path, &[])?;
        body(self)?;
        self.close_pkg_length(start, Trailer::None)
    }

    /// `Device(path) { body }`.
    pub fn device(
        &mut self,
        path: &str,
        body: impl FnOnce(&mut Self) -> Result<(), AcpiError>,
    ) -> Result<(), AcpiError> {
        let start = self.open_named(&[EXT_OP_PREFIX, DEVICE_OP], path, &[])?;
        body(self)?;
        self.close_pkg_length(start, Trailer::None)
    }

    /// `Method(path, args, Serialized/NotSerialized) { body }` with up to
    /// seven arguments.
    pub fn method(
        &mut self,
        path: &str,
        args: u8,
        serialized: bool,
        body: impl FnOnce(&mut Self) -> Result<(), AcpiError>,
    ) -> Result<(), AcpiError> {
        if args > 7 {
            return Err(AcpiError::TooManyArguments { args });
        }
        let flags = [args | (u8::from(serialized) << 3)];
        let start = self.open_named(&[METHOD_OP], path, &flags)?;
        body(self)?;
        self.close_pkg_length(start, Trailer::None)
    }

    /// `Return(value)`: `value` writes one term.
    pub fn return_value(
        &mut self,
        value: impl FnOnce(&mut Self) -> Result<(), AcpiError>,
    ) -> Result<(), AcpiError> {
        self.raw(&[RETURN_OP])?;
        value(self)
    }

    /// `Package() { elements }`; the element count is taken from the calls
    /// made on the [`Package`] (at most 255).
    pub fn package(
        &mut self,
        elements: impl FnOnce(&mut Package<'_, 'a>) -> Result<(), AcpiError>,
    ) -> Result<(), AcpiError> {
        self.raw(&[PACKAGE_OP])?;
        let start = self.len;
        let mut package = Package {
            aml: self,
            count: 0,
        };
        elements(&mut package)?;
        let count = package.count;
        let count = u8::try_from(count).map_err(|_| AcpiError::TooManyElements { count })?;
        self.close_pkg_length(start, Trailer::ElementCount(count))
    }

    /// `Buffer() { bytes written by body }`, its size taken from what
    /// `body` wrote.
    pub fn buffer(
        &mut self,
        body: impl FnOnce(&mut Self) -> Result<(), AcpiError>,
    ) -> Result<(), AcpiError> {
        self.raw(&[BUFFER_OP])?;
        let start = self.len;
        body(self)?;
        self.close_pkg_length(start, Trailer::BufferSize)
    }

    /// `ResourceTemplate() { descriptors }`: a buffer of resource
    /// descriptors ending with an End Tag (checksum 0: "treat as valid").
    pub fn resource_template(
        &mut self,
        descriptors: impl FnOnce(&mut Resources<'_, 'a>) -> Result<(), AcpiError>,
    ) -> Result<(), AcpiError> {
        self.buffer(|a| {
            descriptors(&mut Resources { aml: a })?;
            a.raw(&[END_TAG, 0])
        })
    }
}

/// What follows a PkgLength before the body.
#[derive(Clone, Copy)]
enum Trailer {
    /// Nothing (scopes, devices, methods).
    None,
    /// A package's NumElements byte.
    ElementCount(u8),
    /// A buffer's size: the body length as an integer term.
    BufferSize,
}

/// The shortest integer term for `value` (`ZeroOp`, `OneOp` or a
/// Byte/Word/DWord/QWord constant): its bytes and how many are used.
fn integer_encoding(value: u64) -> ([u8; 9], usize) {
    let (prefix, len) = match value {
        0 => (ZERO_OP, 0),
        1 => (ONE_OP, 0),
        v if v <= 0xff => (BYTE_PREFIX, 1),
        v if v <= 0xffff => (WORD_PREFIX, 2),
        v if v <= 0xffff_ffff => (DWORD_PREFIX, 4),
        _ => (QWORD_PREFIX, 8),
    };
    let mut bytes = [0u8; 9];
    bytes[0] = prefix;
    bytes[1..].copy_from_slice(&value.to_le_bytes());
    (bytes, 1 + len)
}

/// One name segment, padded with `_`.
fn name_seg(segment: &[u8], position: usize) -> Result<[u8; 4], AcpiError> {
    if segment.is_empty() || segment.len() > 4 {
        return Err(AcpiError::BadName { position });
    }
    let mut seg = [b'_'; 4];
    for (i, &c) in segment.iter().enumerate() {
        let ok = c.is_ascii_uppercase() || c == b'_' || (i > 0 && c.is_ascii_digit());
        if !ok {
            return Err(AcpiError::BadName {
                position: position + i,
            });
        }
        seg[i] = c;
    }
    Ok(seg)
}

/// The elements of a package being written.
pub struct Package<'w, 'a> {
    aml: &'w mut Aml<'a>,
    count: usize,
}

impl<'a> Package<'_, 'a> {
    /// An integer element.
    pub fn integer(&mut self, value: u64) -> Result<(), AcpiError> {
        self.count += 1;
        self.aml.integer(value)
    }

    /// A 32-bit element written with its DWord prefix.
    pub fn dword(&mut self, value: u32) -> Result<(), AcpiError> {
        self.count += 1;
        self.aml.dword(value)
    }

    /// A string element.
    pub fn string(&mut self, s: &str) -> Result<(), AcpiError> {
        self.count += 1;
        self.aml.string(s)
    }

    /// A name (object reference) element.
    pub fn name_string(&mut self, path: &str) -> Result<(), AcpiError> {
        self.count += 1;
        self.aml.name_string(path)
    }

    /// A nested package element.
    pub fn package(
        &mut self,
        elements: impl FnOnce(&mut Package<'_, 'a>) -> Result<(), AcpiError>,
    ) -> Result<(), AcpiError> {
        self.count += 1;
        self.aml.package(elements)
    }
}

/// Small resource item: I/O port descriptor (ACPI 6.4.2.5).
pub const IO_PORT_DESCRIPTOR: u8 = 0x47;
/// Small resource item: IRQ descriptor without information byte (6.4.2.1).
pub const IRQ_DESCRIPTOR: u8 = 0x22;
/// Small resource item: End Tag (6.4.2.9).
pub const END_TAG: u8 = 0x79;
/// Large resource item: 32-bit fixed memory range (6.4.3.4).
pub const MEMORY32_FIXED: u8 = 0x86;
/// Large resource item: DWord address space (6.4.3.5.2).
pub const DWORD_ADDRESS_SPACE: u8 = 0x87;
/// Large resource item: Word address space (6.4.3.5.3).
pub const WORD_ADDRESS_SPACE: u8 = 0x88;
/// Large resource item: extended interrupt (6.4.3.6).
pub const EXTENDED_INTERRUPT: u8 = 0x89;
/// Large resource item: QWord address space (6.4.3.5.1).
pub const QWORD_ADDRESS_SPACE: u8 = 0x8a;

/// Address space resource type: memory.
pub const RESOURCE_MEMORY: u8 = 0;
/// Address space resource type: I/O.
pub const RESOURCE_IO: u8 = 1;
/// Address space resource type: bus numbers.
pub const RESOURCE_BUS: u8 = 2;
/// General flags: minimum and maximum fixed, positive decode, producer.
const FIXED_PRODUCER: u8 = 0x0c;

/// Resource descriptors being written into a template.
pub struct Resources<'w, 'a> {
    aml: &'w mut Aml<'a>,
}

impl Resources<'_, '_> {
    /// `IO(Decode16, base, base, 1, len)`: a fixed 16-bit decoded port range.
    pub fn io(&mut self, base: u16, len: u8) -> Result<(), AcpiError> {
        let b = base.to_le_bytes();
        self.aml
            .raw(&[IO_PORT_DESCRIPTOR, 1, b[0], b[1], b[0], b[1], 1, len])
    }

    /// `IRQNoFlags() { irq }`: an edge-triggered, active-high ISA IRQ.
    pub fn irq(&mut self, irq: u8) -> Result<(), AcpiError> {
        if irq > 15 {
            return Err(AcpiError::BadIrq { irq: irq.into() });
        }
        let mask = (1u16 << irq).to_le_bytes();
        self.aml.raw(&[IRQ_DESCRIPTOR, mask[0], mask[1]])
    }

    /// `Memory32Fixed(ReadWrite/ReadOnly, base, len)`.
    pub fn memory32_fixed(&mut self, base: u32, len: u32, writable: bool) -> Result<(), AcpiError> {
        self.aml.raw(&[MEMORY32_FIXED, 9, 0, u8::from(writable)])?;
        self.aml.raw(&base.to_le_bytes())?;
        self.aml.raw(&len.to_le_bytes())
    }

    /// `Interrupt(ResourceConsumer, Edge/Level, ActiveHigh/ActiveLow,
    /// Exclusive/Shared) { gsi }`.
    pub fn interrupt(
        &mut self,
        gsi: u32,
        edge: bool,
        active_low: bool,
        shared: bool,
    ) -> Result<(), AcpiError> {
        let flags =
            1 | (u8::from(edge) << 1) | (u8::from(active_low) << 2) | (u8::from(shared) << 3);
        self.aml.raw(&[EXTENDED_INTERRUPT, 6, 0, flags, 1])?;
        self.aml.raw(&gsi.to_le_bytes())
    }

    /// `WordBusNumber(ResourceProducer, MinFixed, MaxFixed, PosDecode, 0,
    /// start, end, 0, end - start + 1)`.
    pub fn word_bus_number(&mut self, start: u8, end: u8) -> Result<(), AcpiError> {
        self.word_space(RESOURCE_BUS, 0, u16::from(start), u16::from(end))
    }

    /// `WordIO(ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,
    /// 0, start, end, 0, end - start + 1)`.
    pub fn word_io(&mut self, start: u16, end: u16) -> Result<(), AcpiError> {
        self.word_space(RESOURCE_IO, 3, start, end)
    }

    fn word_space(
        &mut self,
        kind: u8,
        type_flags: u8,
        min: u16,
        max: u16,
    ) -> Result<(), AcpiError> {
        let (min, max) = (u64::from(min), u64::from(max));
        self.address_space(WORD_ADDRESS_SPACE, 2, kind, type_flags, min, max)
    }

    /// `DWordMemory(ResourceProducer, PosDecode, MinFixed, MaxFixed,
    /// Cacheable/NonCacheable, ReadWrite, 0, start, end, 0, len)`.
    pub fn dword_memory(&mut self, start: u32, end: u32, cacheable: bool) -> Result<(), AcpiError> {
        self.address_space(
            DWORD_ADDRESS_SPACE,
            4,
            RESOURCE_MEMORY,
            memory_type_flags(cacheable),
            u64::from(start),
            u64::from(end),
        )
    }

    /// `QWordMemory(ResourceProducer, PosDecode, MinFixed, MaxFixed,
    /// Cacheable/NonCacheable, ReadWrite, 0, start, end, 0, len)`.
    pub fn qword_memory(&mut self, start: u64, end: u64, cacheable: bool) -> Result<(), AcpiError> {
        self.address_space(
            QWORD_ADDRESS_SPACE,
            8,
            RESOURCE_MEMORY,
            memory_type_flags(cacheable),
            start,
            end,
        )
    }

    /// An address space descriptor whose five fields (granularity 0,
    /// minimum, maximum, translation 0, length) are `width` bytes each,
    /// assembled whole and appended at once.
    #[inline(never)]
    fn address_space(
        &mut self,
        tag: u8,
        width: usize,
        kind: u8,
        type_flags: u8,
        min: u64,
        max: u64,
    ) -> Result<(), AcpiError> {
        let limit = u64::MAX >> (64 - 8 * width);
        let len = range_len(min, max, limit)?;
        let mut descriptor = [0u8; 6 + 5 * 8];
        // The length field counts the bytes after itself.
        let body_len = 3 + 5 * width as u8;
        descriptor[..6].copy_from_slice(&[tag, body_len, 0, kind, FIXED_PRODUCER, type_flags]);
        for (i, value) in [0, min, max, 0, len].into_iter().enumerate() {
            let at = 6 + i * width;
            descriptor[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
        }
        self.aml.raw(&descriptor[..6 + 5 * width])
    }
}

/// Memory type-specific flags: read/write, cacheable (1) or not (0).
fn memory_type_flags(cacheable: bool) -> u8 {
    1 | (u8::from(cacheable) << 1)
}

/// Length of the inclusive range `[min, max]`, which must fit `limit`.
fn range_len(min: u64, max: u64, limit: u64) -> Result<u64, AcpiError> {
    if max < min {
        return Err(AcpiError::BadRange {
            start: min,
            end: max,
        });
    }
    let len = (max - min).checked_add(1);
    len.filter(|&l| l <= limit).ok_or(AcpiError::BadRange {
        start: min,
        end: max,
    })
}
