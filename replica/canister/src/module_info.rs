//! What the system needs to know about a module before running it: its active data segments
//! (an upgrade that keeps the Wasm memory loads only these into the old memory) and its custom
//! sections (Motoko marks canisters with enhanced orthogonal persistence in one).

use wasmparser::{DataKind, Operator, Parser, Payload};

use crate::ExecError;

/// The custom section by which a module says its main memory must be kept across upgrades.
pub const EOP_SECTION: &str = "icp:private enhanced-orthogonal-persistence";

/// A module's metadata section (`icp:public <name>` or `icp:private <name>`): what
/// `read_state` serves at `/canister/<id>/metadata/<name>`, private ones to controllers only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    pub name: String,
    pub public: bool,
    pub content: Vec<u8>,
}

/// The metadata sections of a module, by name. A name given twice (in either visibility)
/// makes the module invalid, as on the IC.
pub fn metadata(wasm: &[u8]) -> Result<Vec<Metadata>, ExecError> {
    let bad = |e: wasmparser::BinaryReaderError| ExecError::InvalidModule(e.to_string());
    let mut out: Vec<Metadata> = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        let Payload::CustomSection(s) = payload.map_err(bad)? else {
            continue;
        };
        let (public, name) = if let Some(n) = s.name().strip_prefix("icp:public ") {
            (true, n)
        } else if let Some(n) = s.name().strip_prefix("icp:private ") {
            (false, n)
        } else {
            continue;
        };
        if out.iter().any(|m| m.name == name) {
            return Err(ExecError::InvalidModule(format!(
                "the metadata section {name:?} is declared twice"
            )));
        }
        out.push(Metadata {
            name: name.to_string(),
            public,
            content: s.data().to_vec(),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The type of a global's value, as a snapshot records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GlobalKind {
    I32,
    I64,
    F32,
    F64,
    /// `v128` or a reference: not kept between messages.
    Other,
}

/// The names under which a module exports its mutable globals, with their types, in the order
/// of its exports: what a canister keeps of its globals between messages, and the order in
/// which a canister snapshot lists them.
pub fn exported_mutable_globals(wasm: &[u8]) -> Result<Vec<(String, GlobalKind)>, ExecError> {
    let bad = |e: wasmparser::BinaryReaderError| ExecError::InvalidModule(e.to_string());
    let kind = |t: wasmparser::GlobalType| {
        let k = match t.content_type {
            wasmparser::ValType::I32 => GlobalKind::I32,
            wasmparser::ValType::I64 => GlobalKind::I64,
            wasmparser::ValType::F32 => GlobalKind::F32,
            wasmparser::ValType::F64 => GlobalKind::F64,
            _ => GlobalKind::Other,
        };
        (t.mutable, k)
    };
    // Each global (imported ones first, as indices count them): mutable, and its type.
    let mut globals = Vec::new();
    let mut out = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(bad)? {
            Payload::ImportSection(r) => {
                for imp in r.into_imports() {
                    if let wasmparser::TypeRef::Global(g) = imp.map_err(bad)?.ty {
                        globals.push(kind(g));
                    }
                }
            }
            Payload::GlobalSection(r) => {
                for g in r {
                    globals.push(kind(g.map_err(bad)?.ty));
                }
            }
            Payload::ExportSection(r) => {
                for e in r {
                    let e = e.map_err(bad)?;
                    if e.kind != wasmparser::ExternalKind::Global {
                        continue;
                    }
                    if let Some((true, k)) = globals.get(e.index as usize) {
                        out.push((e.name.to_string(), *k));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModuleInfo {
    /// Active data segments of memory 0, with constant offsets: (offset, bytes).
    pub data_segments: Vec<(u64, Vec<u8>)>,
    pub custom_sections: Vec<String>,
    /// The initial size of the module's own memory in bytes (None: it defines none), capped
    /// at the largest heap a canister may have.
    pub initial_memory_bytes: Option<u64>,
    /// The largest its memory may grow to: its declared maximum, within the largest heap a
    /// canister may have (0 when it defines no memory).
    pub maximum_memory_bytes: u64,
}

impl ModuleInfo {
    /// The heap pages (of [`crate::page_map::PAGE_SIZE`]) the active data segments write at
    /// instantiation, ascending.
    pub fn data_pages(&self) -> Vec<usize> {
        let page = crate::page_map::PAGE_SIZE;
        let mut pages: Vec<usize> = self
            .data_segments
            .iter()
            .filter(|(_, bytes)| !bytes.is_empty())
            .flat_map(|(at, bytes)| {
                (*at as usize / page)..=((*at as usize + bytes.len() - 1) / page)
            })
            .collect();
        pages.sort_unstable();
        pages.dedup();
        pages
    }

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
                        info.maximum_memory_bytes = m
                            .maximum
                            .map_or(cap, |max| max.saturating_mul(65536).min(cap));
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
/// The export under which the function table is reachable, if the module does not export it.
pub const TABLE_EXPORT: &str = "__thicket_table";

/// A module as the runtime compiles it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    pub wasm: Vec<u8>,
    /// Whether it had a `(start)` function, now exported as [`START_EXPORT`].
    pub has_start: bool,
    /// The export of table 0, through which callbacks are called.
    pub table_export: Option<String>,
}

/// Rewrites a (valid) module for execution:
/// - the IC runs a module's `(start)` function once, when code is installed or upgraded, on the
///   canister's memory, and not on every message. Wasmtime runs it at every instantiation, so
///   the start section is removed and the function exported as [`START_EXPORT`] instead, to be
///   called explicitly;
/// - callbacks are indices into table 0, which the host reaches through an export: a module
///   that does not export its table gets [`TABLE_EXPORT`].
pub fn prepare(wasm: &[u8]) -> Result<Prepared, ExecError> {
    let bad = |what: &str| ExecError::InvalidModule(format!("malformed module: {what}"));
    let parse_err = |e: wasmparser::BinaryReaderError| ExecError::InvalidModule(e.to_string());
    let mut start = None;
    let mut has_table = false;
    let mut table_export = None;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(parse_err)? {
            Payload::StartSection { func, .. } => start = Some(func),
            Payload::TableSection(r) => has_table |= r.count() > 0,
            Payload::ImportSection(r) => {
                for imp in r.into_imports() {
                    let imp = imp.map_err(parse_err)?;
                    has_table |= matches!(imp.ty, wasmparser::TypeRef::Table(_));
                }
            }
            Payload::ExportSection(r) => {
                for e in r {
                    let e = e.map_err(parse_err)?;
                    if e.kind == wasmparser::ExternalKind::Table && e.index == 0 {
                        table_export.get_or_insert_with(|| e.name.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    let mut extra: Vec<Vec<u8>> = Vec::new();
    let entry = |name: &str, kind: u8, index: u32| {
        let mut e = leb(name.len() as u64);
        e.extend_from_slice(name.as_bytes());
        e.push(kind);
        e.extend(leb(u64::from(index)));
        e
    };
    if let Some(func) = start {
        extra.push(entry(START_EXPORT, 0x00, func));
    }
    if has_table && table_export.is_none() {
        extra.push(entry(TABLE_EXPORT, 0x01, 0));
        table_export = Some(TABLE_EXPORT.to_string());
    }
    let prepared = |wasm: Vec<u8>| Prepared {
        wasm,
        has_start: start.is_some(),
        table_export: table_export.clone(),
    };
    if extra.is_empty() {
        return Ok(prepared(wasm.to_vec()));
    }
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
    let new_exports = |count: u64, existing: &[u8]| {
        let mut c = leb(count + extra.len() as u64);
        c.extend_from_slice(existing);
        for e in &extra {
            c.extend_from_slice(e);
        }
        c
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
            emit(&mut out, 7, &new_exports(0, &[]));
            inserted = true;
        }
        match id {
            8 => {}
            7 => {
                let (count, n) = leb_u32(contents).ok_or_else(|| bad("export count"))?;
                emit(&mut out, 7, &new_exports(u64::from(count), &contents[n..]));
            }
            _ => emit(&mut out, *id, contents),
        }
    }
    if !inserted {
        emit(&mut out, 7, &new_exports(0, &[]));
    }
    Ok(prepared(out))
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
            let prepared = prepare(&wasm).expect("rewrites");
            assert!(prepared.has_start);
            let out = prepared.wasm;
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
        let prepared = prepare(&plain).expect("ok");
        assert_eq!(prepared.wasm, plain);
        assert!(!prepared.has_start);
    }

    #[test]
    fn the_table_is_exported_for_callbacks() {
        let exported = wat::parse_str(r#"(module (table (export "t") 1 funcref))"#).expect("wat");
        let p = prepare(&exported).expect("ok");
        assert_eq!((p.wasm, p.table_export.as_deref()), (exported, Some("t")));
        let hidden =
            wat::parse_str(r#"(module (table 2 funcref) (func (export "f")))"#).expect("wat");
        let p = prepare(&hidden).expect("ok");
        assert_eq!(p.table_export.as_deref(), Some(TABLE_EXPORT));
        wasmparser::Validator::new()
            .validate_all(&p.wasm)
            .expect("validates");
        assert_eq!(
            prepare(&wat::parse_str("(module)").expect("wat"))
                .expect("ok")
                .table_export,
            None
        );
    }
}
