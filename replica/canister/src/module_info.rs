//! What the system needs to know about a module before running it: its active data segments
//! (an upgrade that keeps the Wasm memory loads only these into the old memory) and its custom
//! sections (Motoko marks canisters with enhanced orthogonal persistence in one).

use wasmparser::{DataKind, Operator, Parser, Payload};

use crate::ExecError;

/// The custom section by which a module says its main memory must be kept across upgrades.
pub const EOP_SECTION: &str = "icp:private enhanced-orthogonal-persistence";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModuleInfo {
    /// Active data segments of memory 0, with constant offsets: (offset, bytes).
    pub data_segments: Vec<(u64, Vec<u8>)>,
    pub custom_sections: Vec<String>,
    /// The initial size of the module's own memory in bytes (None: it defines none), capped
    /// at the largest heap a canister may have.
    pub initial_memory_bytes: Option<u64>,
}

impl ModuleInfo {
    pub fn parse(wasm: &[u8]) -> Result<Self, ExecError> {
        let bad = |e: wasmparser::BinaryReaderError| ExecError::InvalidModule(e.to_string());
        let mut info = ModuleInfo::default();
        for payload in Parser::new(0).parse_all(wasm) {
            match payload.map_err(bad)? {
                Payload::DataSection(reader) => {
                    for data in reader {
                        let data = data.map_err(bad)?;
                        if let DataKind::Active {
                            memory_index: 0,
                            offset_expr,
                        } = data.kind
                        {
                            let mut ops = offset_expr.get_operators_reader();
                            let offset = match (ops.read().map_err(bad)?, ops.read().map_err(bad)?)
                            {
                                (Operator::I32Const { value }, Operator::End) => {
                                    u64::from(value as u32)
                                }
                                (Operator::I64Const { value }, Operator::End) => value as u64,
                                _ => {
                                    return Err(ExecError::InvalidModule(
                                        "a data segment's offset is not a single constant".into(),
                                    ));
                                }
                            };
                            info.data_segments.push((offset, data.data.to_vec()));
                        }
                    }
                }
                Payload::CustomSection(s) => info.custom_sections.push(s.name().to_string()),
                Payload::MemorySection(reader) => {
                    if let Some(m) = reader.into_iter().next() {
                        let m = m.map_err(bad)?;
                        let cap = if m.memory64 {
                            crate::MAX_HEAP_BYTES_64
                        } else {
                            crate::MAX_HEAP_BYTES_32
                        };
                        info.initial_memory_bytes = Some(m.initial.saturating_mul(65536).min(cap));
                    }
                }
                _ => {}
            }
        }
        Ok(info)
    }

    pub fn keeps_main_memory(&self) -> bool {
        self.custom_sections.iter().any(|s| s == EOP_SECTION)
    }

    /// `heap` with this module's data segments written over it (growing it if a segment
    /// reaches beyond its end). A segment must lie within the module's initial memory, as it
    /// must for instantiation; otherwise nothing changes and the module is refused.
    pub fn apply_data_segments(&self, heap: &mut Vec<u8>) -> Result<(), ExecError> {
        let limit = self.initial_memory_bytes.unwrap_or(0);
        for (offset, bytes) in &self.data_segments {
            let end = offset.checked_add(bytes.len() as u64);
            if end.is_none_or(|e| e > limit) {
                return Err(ExecError::InvalidModule(format!(
                    "a data segment at offset {offset} ({} bytes) lies outside the initial memory of {limit} bytes",
                    bytes.len()
                )));
            }
        }
        for (offset, bytes) in &self.data_segments {
            let (start, end) = (*offset as usize, *offset as usize + bytes.len());
            if heap.len() < end {
                heap.resize(end.div_ceil(65536) * 65536, 0);
            }
            heap[start..end].copy_from_slice(bytes);
        }
        Ok(())
    }
}

/// The export under which a module's `(start)` function is reachable once detached.
pub const START_EXPORT: &str = "__thicket_start";

/// The IC runs a module's `(start)` function once, when code is installed or upgraded, on the
/// canister's memory, and not on every message. Wasmtime runs it at every instantiation, so
/// the start section is removed and the function exported as [`START_EXPORT`] instead, to be
/// called explicitly. Returns the module unchanged when it has no start function.
pub fn detach_start(wasm: &[u8]) -> Result<Option<Vec<u8>>, ExecError> {
    let bad = |what: &str| ExecError::InvalidModule(format!("malformed module: {what}"));
    if wasm.len() < 8 {
        return Err(bad("too short"));
    }
    let mut sections = Vec::new();
    let mut pos = 8;
    while pos < wasm.len() {
        let id = wasm[pos];
        let (size, n) = leb_u32(&wasm[pos + 1..]).ok_or_else(|| bad("section size"))?;
        let start = pos + 1 + n;
        let end = start
            .checked_add(size as usize)
            .filter(|e| *e <= wasm.len())
            .ok_or_else(|| bad("section beyond the end"))?;
        sections.push((id, start..end));
        pos = end;
    }
    let Some(func) = sections
        .iter()
        .find(|(id, _)| *id == 8)
        .map(|(_, r)| leb_u32(&wasm[r.clone()]).map(|(f, _)| f))
    else {
        return Ok(None);
    };
    let func = func.ok_or_else(|| bad("start section"))?;
    let mut entry = leb(START_EXPORT.len() as u64);
    entry.extend_from_slice(START_EXPORT.as_bytes());
    entry.push(0x00);
    entry.extend(leb(u64::from(func)));
    // Sections in their required order; an export section goes after globals (and tags).
    let rank = |id: u8| match id {
        1..=5 => u32::from(id),
        13 => 6,
        6 => 7,
        7 => 8,
        8 => 9,
        9 => 10,
        12 => 11,
        10 => 12,
        11 => 13,
        _ => 0,
    };
    let has_exports = sections.iter().any(|(id, _)| *id == 7);
    let mut out = wasm[..8].to_vec();
    let mut inserted = has_exports;
    let emit = |out: &mut Vec<u8>, id: u8, contents: &[u8]| {
        out.push(id);
        out.extend(leb(contents.len() as u64));
        out.extend_from_slice(contents);
    };
    for (id, range) in &sections {
        let contents = &wasm[range.clone()];
        if !inserted && *id != 0 && rank(*id) > 8 {
            let mut c = leb(1);
            c.extend_from_slice(&entry);
            emit(&mut out, 7, &c);
            inserted = true;
        }
        match id {
            8 => {}
            7 => {
                let (count, n) = leb_u32(contents).ok_or_else(|| bad("export count"))?;
                let mut c = leb(u64::from(count) + 1);
                c.extend_from_slice(&contents[n..]);
                c.extend_from_slice(&entry);
                emit(&mut out, 7, &c);
            }
            _ => emit(&mut out, *id, contents),
        }
    }
    if !inserted {
        let mut c = leb(1);
        c.extend_from_slice(&entry);
        emit(&mut out, 7, &c);
    }
    Ok(Some(out))
}

fn leb_u32(b: &[u8]) -> Option<(u32, usize)> {
    let mut v: u64 = 0;
    for (i, byte) in b.iter().take(5).enumerate() {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return u32::try_from(v).ok().map(|v| (v, i + 1));
        }
    }
    None
}

fn leb(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_segments_and_sections() {
        let wasm = wat::parse_str(
            r#"(module (memory 1) (data (i32.const 16) "hi") (data (i32.const 70000) "x"))"#,
        )
        .expect("wat");
        let info = ModuleInfo::parse(&wasm).expect("parses");
        assert_eq!(
            info.data_segments,
            vec![(16, b"hi".to_vec()), (70000, b"x".to_vec())]
        );
        assert!(!info.keeps_main_memory());
        let mut heap = vec![7u8; 32];
        assert!(
            info.apply_data_segments(&mut heap).is_err(),
            "70000 is beyond one page"
        );
        let wasm = wat::parse_str(
            r#"(module (memory 2) (data (i32.const 16) "hi") (data (i32.const 70000) "x"))"#,
        )
        .expect("wat");
        let info = ModuleInfo::parse(&wasm).expect("parses");
        info.apply_data_segments(&mut heap).expect("fits");
        assert_eq!(&heap[16..18], b"hi");
        assert_eq!(heap[0], 7);
        assert_eq!(heap.len(), 131072);
        assert_eq!(heap[70000], b'x');
        assert!(ModuleInfo::parse(b"\0asm\x01\0\0\0\xff").is_err());
    }

    #[test]
    fn the_start_function_is_detached_and_exported() {
        for src in [
            r#"(module (global $g (mut i32) (i32.const 0)) (func $s (global.set $g (i32.const 1))) (start $s))"#,
            r#"(module (func $s) (func (export "f")) (start $s) (memory 1) (data (i32.const 0) "x"))"#,
        ] {
            let wasm = wat::parse_str(src).expect("wat");
            let out = detach_start(&wasm).expect("rewrites").expect("has a start");
            let parsed: Vec<_> = Parser::new(0)
                .parse_all(&out)
                .collect::<Result<_, _>>()
                .expect("still a valid module");
            assert!(
                !parsed
                    .iter()
                    .any(|p| matches!(p, Payload::StartSection { .. }))
            );
            let exports: Vec<String> = parsed
                .iter()
                .filter_map(|p| match p {
                    Payload::ExportSection(r) => Some(r.clone()),
                    _ => None,
                })
                .flat_map(|r| r.into_iter().map(|e| e.expect("export").name.to_string()))
                .collect();
            assert!(exports.contains(&START_EXPORT.to_string()), "{exports:?}");
            wasmparser::Validator::new()
                .validate_all(&out)
                .expect("validates");
        }
        let plain = wat::parse_str("(module)").expect("wat");
        assert_eq!(detach_start(&plain).expect("ok"), None);
    }
}
