//! ELF32 little-endian files, as the riscv32imc linker writes them: the loadable segments
//! flattened into one image (what goes into a slot or at flash offset 0), the entry point and
//! the symbol table (where the runner puts its breakpoints).
//!
//! | offset | ELF header field | | offset | program header field |
//! |--------|------------------|-|--------|----------------------|
//! | 0x00   | `\x7fELF`, class 1 (32-bit), data 1 (little-endian) | | 0x00 | `p_type` (1: `PT_LOAD`) |
//! | 0x18   | `e_entry`        | | 0x04   | `p_offset`           |
//! | 0x1c   | `e_phoff`        | | 0x0c   | `p_paddr`            |
//! | 0x20   | `e_shoff`        | | 0x10   | `p_filesz`           |
//! | 0x2a   | `e_phentsize`, `e_phnum` | | 0x14 | `p_memsz`       |
//! | 0x2e   | `e_shentsize`, `e_shnum` | |     |                      |

/// A parsed ELF32 file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Elf {
    pub entry: u32,
    /// `PT_LOAD` segments with file bytes: physical address and bytes.
    pub segments: Vec<(u32, Vec<u8>)>,
    /// Every named symbol: name and value.
    pub symbols: Vec<(String, u32)>,
}

/// A flat image: the bytes from `base` on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flat {
    pub base: u32,
    pub bytes: Vec<u8>,
}

const PT_LOAD: u32 = 1;
const SHT_SYMTAB: u32 = 2;
/// Symbols read at most, so a corrupt table cannot exhaust memory.
const SYMBOLS_MAX: usize = 1 << 20;

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn range(bytes: &[u8], offset: u32, len: u32) -> Option<&[u8]> {
    let start = offset as usize;
    bytes.get(start..start.checked_add(len as usize)?)
}

impl Elf {
    pub fn parse(bytes: &[u8]) -> Result<Elf, String> {
        if bytes.get(..4) != Some(b"\x7fELF") {
            return Err("not an ELF file (no \\x7fELF magic)".into());
        }
        if bytes.get(4..6) != Some(&[1, 1]) {
            return Err("not a 32-bit little-endian ELF file (riscv32imc writes those)".into());
        }
        let short = || "the ELF header is cut short".to_string();
        let entry = u32_at(bytes, 0x18).ok_or_else(short)?;
        let phoff = u32_at(bytes, 0x1c).ok_or_else(short)?;
        let shoff = u32_at(bytes, 0x20).ok_or_else(short)?;
        let phentsize = u16_at(bytes, 0x2a).ok_or_else(short)?;
        let phnum = u16_at(bytes, 0x2c).ok_or_else(short)?;
        let shentsize = u16_at(bytes, 0x2e).ok_or_else(short)?;
        let shnum = u16_at(bytes, 0x30).ok_or_else(short)?;
        let mut segments = Vec::new();
        for i in 0..u32::from(phnum) {
            let at = (phoff + i * u32::from(phentsize)) as usize;
            let field = |o: usize| u32_at(bytes, at + o).ok_or(format!("program header {i} is cut short"));
            let (kind, offset, paddr, filesz) = (field(0)?, field(4)?, field(0xc)?, field(0x10)?);
            if kind != PT_LOAD || filesz == 0 {
                continue;
            }
            let data = range(bytes, offset, filesz).ok_or(format!(
                "segment {i} ({filesz} bytes at file offset {offset:#x}) runs past the file"
            ))?;
            segments.push((paddr, data.to_vec()));
        }
        let symbols = symbols(bytes, shoff, shentsize, shnum)?;
        Ok(Elf { entry, segments, symbols })
    }

    /// The value of the symbol `name`.
    pub fn symbol(&self, name: &str) -> Option<u32> {
        self.symbols.iter().find(|(n, _)| n == name).map(|&(_, v)| v)
    }

    /// The loadable segments as one image, from the lowest physical address, gaps filled with
    /// 0; refused when it would exceed `max_bytes`.
    pub fn flatten(&self, max_bytes: usize) -> Result<Flat, String> {
        let base = self.segments.iter().map(|(a, _)| *a).min().ok_or("the ELF file has no loadable bytes")?;
        let end = self.segments.iter().map(|(a, d)| u64::from(*a) + d.len() as u64).max().unwrap_or(0);
        let span = end - u64::from(base);
        if span > max_bytes as u64 {
            return Err(format!(
                "its loadable segments span {span} bytes from {base:#x}, more than the {max_bytes} bytes it may take"
            ));
        }
        let mut bytes = vec![0u8; span as usize];
        for (addr, data) in &self.segments {
            let at = (addr - base) as usize;
            bytes[at..at + data.len()].copy_from_slice(data);
        }
        Ok(Flat { base, bytes })
    }
}

fn symbols(bytes: &[u8], shoff: u32, shentsize: u16, shnum: u16) -> Result<Vec<(String, u32)>, String> {
    let section = |i: u32| -> Option<(u32, u32, u32, u32)> {
        let at = (shoff as usize).checked_add(i as usize * usize::from(shentsize))?;
        Some((
            u32_at(bytes, at + 4)?,
            u32_at(bytes, at + 0x10)?,
            u32_at(bytes, at + 0x14)?,
            u32_at(bytes, at + 0x18)?,
        ))
    };
    let mut out = Vec::new();
    for i in 0..u32::from(shnum) {
        let Some((kind, offset, size, link)) = section(i) else {
            return Err(format!("section header {i} is cut short"));
        };
        if kind != SHT_SYMTAB {
            continue;
        }
        let (_, str_offset, str_size, _) =
            section(link).ok_or("the symbol table's string table is missing")?;
        let strings = range(bytes, str_offset, str_size).ok_or("the string table runs past the file")?;
        let table = range(bytes, offset, size).ok_or("the symbol table runs past the file")?;
        for entry in table.chunks_exact(16).take(SYMBOLS_MAX) {
            let name_at = u32_at(entry, 0).unwrap_or(0) as usize;
            let value = u32_at(entry, 4).unwrap_or(0);
            let name = strings.get(name_at..).and_then(|s| s.split(|&b| b == 0).next()).unwrap_or_default();
            if !name.is_empty() {
                out.push((String::from_utf8_lossy(name).into_owned(), value));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal ELF32: the given `PT_LOAD` segments (physical address, bytes) and symbols.
    pub(crate) fn build(entry: u32, segments: &[(u32, &[u8])], symbols: &[(&str, u32)]) -> Vec<u8> {
        let phoff = 0x34u32;
        let mut data_at = phoff + 32 * segments.len() as u32;
        let mut out = vec![0u8; data_at as usize];
        out[..6].copy_from_slice(b"\x7fELF\x01\x01");
        out[0x18..0x1c].copy_from_slice(&entry.to_le_bytes());
        out[0x1c..0x20].copy_from_slice(&phoff.to_le_bytes());
        out[0x2a..0x2c].copy_from_slice(&32u16.to_le_bytes());
        out[0x2c..0x2e].copy_from_slice(&(segments.len() as u16).to_le_bytes());
        out[0x2e..0x30].copy_from_slice(&40u16.to_le_bytes());
        for (i, (addr, bytes)) in segments.iter().enumerate() {
            let at = phoff as usize + 32 * i;
            for (o, v) in [
                (0, PT_LOAD),
                (4, data_at),
                (8, addr + 0x1000),
                (0xc, *addr),
                (0x10, bytes.len() as u32),
                (0x14, bytes.len() as u32),
            ] {
                out[at + o..at + o + 4].copy_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(bytes);
            data_at += bytes.len() as u32;
        }
        // The string table, the symbol table, then three section headers (null, symtab, strtab).
        let mut strings = vec![0u8];
        let mut table = vec![0u8; 16];
        for (name, value) in symbols {
            let mut entry = [0u8; 16];
            entry[..4].copy_from_slice(&(strings.len() as u32).to_le_bytes());
            entry[4..8].copy_from_slice(&value.to_le_bytes());
            table.extend_from_slice(&entry);
            strings.extend_from_slice(name.as_bytes());
            strings.push(0);
        }
        let (str_at, sym_at) = (out.len() as u32, (out.len() + strings.len()) as u32);
        out.extend_from_slice(&strings);
        out.extend_from_slice(&table);
        let shoff = out.len() as u32;
        out[0x20..0x24].copy_from_slice(&shoff.to_le_bytes());
        out[0x30..0x32].copy_from_slice(&3u16.to_le_bytes());
        out.extend_from_slice(&[0u8; 40]);
        for (kind, at, size, link) in
            [(SHT_SYMTAB, sym_at, table.len() as u32, 2), (3, str_at, strings.len() as u32, 0)]
        {
            let mut header = [0u8; 40];
            for (o, v) in [(4, kind), (0x10, at), (0x14, size), (0x18, link)] {
                header[o..o + 4].copy_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&header);
        }
        out
    }

    #[test]
    fn segments_flatten_from_the_lowest_address_with_gaps_zeroed() {
        let elf = build(
            0x8000_0100,
            &[(0x8000_0200, &[5, 6]), (0x8000_0000, &[1, 2, 3])],
            &[("ota_flash_program", 0x8000_0120)],
        );
        let elf = Elf::parse(&elf).unwrap();
        assert_eq!(elf.entry, 0x8000_0100);
        assert_eq!(elf.symbol("ota_flash_program"), Some(0x8000_0120));
        assert_eq!(elf.symbol("ota_flash_erase"), None);
        let flat = elf.flatten(4096).unwrap();
        assert_eq!(flat.base, 0x8000_0000);
        assert_eq!(flat.bytes.len(), 0x202);
        assert_eq!((&flat.bytes[..4], &flat.bytes[0x200..]), (&[1, 2, 3, 0][..], &[5, 6][..]));
        assert_eq!(
            elf.flatten(0x201).unwrap_err(),
            "its loadable segments span 514 bytes from 0x80000000, more than the 513 bytes it may take"
        );
    }

    #[test]
    fn files_that_are_not_elf32_little_endian_are_refused_with_the_reason() {
        assert_eq!(Elf::parse(b"MZ\x90\x00").unwrap_err(), "not an ELF file (no \\x7fELF magic)");
        assert_eq!(
            Elf::parse(b"\x7fELF\x02\x01\0\0").unwrap_err(),
            "not a 32-bit little-endian ELF file (riscv32imc writes those)"
        );
        assert_eq!(Elf::parse(b"\x7fELF\x01\x01\0\0").unwrap_err(), "the ELF header is cut short");
        let mut cut = build(0, &[(0, &[1; 64])], &[]);
        cut[0x34 + 4..0x34 + 8].copy_from_slice(&0xffff_0000u32.to_le_bytes());
        assert!(
            Elf::parse(&cut)
                .unwrap_err()
                .starts_with("segment 0 (64 bytes at file offset 0xffff0000) runs past")
        );
        assert_eq!(
            Elf::parse(&build(0, &[], &[])).unwrap().flatten(16).unwrap_err(),
            "the ELF file has no loadable bytes"
        );
    }
}
