//! Compiles `proto/**/*.proto` with protox (pure Rust, no `protoc`), checks the opcodes against
//! `opcodes.lock`, and generates into `OUT_DIR`:
//! - `lattice.rs`: the prost message types;
//! - `registry.rs`: opcode constants, the `OpcodeInfo` table, `LatticeMessage` impls, `AnyMessage`;
//! - `ts/*.ts`: the TypeScript client files written by `lattice-proto gen-ts`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use heck::{ToLowerCamelCase, ToShoutySnakeCase, ToSnakeCase, ToUpperCamelCase};
use prost_reflect::{Cardinality, Kind, MessageDescriptor, Value};

#[path = "build_ts.rs"]
mod build_ts;
#[path = "src/error_code.rs"]
#[allow(dead_code)]
mod error_code;
#[path = "src/icons.rs"]
#[allow(dead_code)]
mod icons;
#[path = "src/lockfile.rs"]
mod lockfile;
#[path = "src/version.rs"]
#[allow(dead_code)]
mod version;

/// Everything the generators need to know about one message.
pub struct Msg {
    pub full_name: String,
    /// Path of the prost type below `pb::`.
    pub rust_path: String,
    /// Flattened TypeScript name (`Outer_Inner` for nested types).
    pub ts_name: String,
    pub short_name: String,
    pub opcode: Option<u16>,
    pub no_log_request: bool,
    pub no_log_response: bool,
    pub no_client: bool,
    pub fields: Vec<Field>,
    pub is_map_entry: bool,
}

pub struct Field {
    pub name: String,
    pub ts_name: String,
    pub number: u32,
    pub kind: FieldKind,
    pub repeated: bool,
    /// proto3 `optional` or a real oneof member: presence is tracked.
    pub optional: bool,
    pub is_map: bool,
    /// Encoding position: the field number, or for a real oneof member the lowest number of its
    /// oneof (prost-derive encodes fields sorted this way).
    pub sort_key: u32,
}

pub enum FieldKind {
    Scalar(&'static str),
    Enum(String),
    Message(String),
}

pub struct EnumDef {
    pub ts_name: String,
    pub values: Vec<(String, i32)>,
}

fn main() {
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let proto_root = manifest.join("proto");
    let lock_path = manifest.join("opcodes.lock");
    println!("cargo:rerun-if-changed={}", proto_root.display());
    println!("cargo:rerun-if-changed={}", lock_path.display());
    println!("cargo:rerun-if-changed=src/lockfile.rs");
    println!("cargo:rerun-if-changed=src/version.rs");
    println!("cargo:rerun-if-changed=src/error_code.rs");
    println!("cargo:rerun-if-changed=build_ts.rs");
    println!("cargo:rerun-if-changed=ts-runtime");
    println!("cargo:rerun-if-env-changed=LATTICE_PROTO_UPDATE_LOCK");
    println!("cargo:rerun-if-changed=fixtures");
    println!("cargo:rerun-if-changed=src/icons.rs");
    let icons_path = manifest.join("icons").join("icons.txt");
    println!("cargo:rerun-if-changed={}", icons_path.display());

    let mut files = Vec::new();
    collect_protos(&proto_root, &proto_root, &mut files);
    files.sort();
    if files.is_empty() {
        fail(&[format!("no .proto files under {}", proto_root.display())]);
    }
    let Loaded {
        mut compiler,
        decls,
        msgs,
        enums,
    } = load(&[&proto_root], &files);

    let lock_text = std::fs::read_to_string(&lock_path).unwrap_or_default();
    let update = std::env::var("LATTICE_PROTO_UPDATE_LOCK").is_ok_and(|v| v == "1");
    let checked = match lockfile::check(&decls, &lock_text, update) {
        Ok(c) => c,
        Err(errors) => fail(&errors.iter().map(|e| e.to_string()).collect::<Vec<_>>()),
    };
    if update && checked.lock_text != lock_text {
        std::fs::write(&lock_path, &checked.lock_text)
            .unwrap_or_else(|e| fail(&[format!("writing {}: {e}", lock_path.display())]));
        for a in &checked.added {
            println!(
                "cargo:warning=opcodes.lock: added {} {}",
                a.opcode, a.full_name
            );
        }
    }

    // Short names must be unique: they name enum variants and TypeScript types.
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for m in msgs.iter().filter(|m| m.opcode.is_some()) {
        if let Some(prev) = seen.insert(&m.short_name, &m.full_name) {
            fail(&[format!(
                "messages {prev} and {} share the name {}",
                m.full_name, m.short_name
            )]);
        }
    }

    // prost types. Messages with no-log flags get a redacting Debug so a `{:?}` never leaks them.
    let redacted: Vec<String> = msgs
        .iter()
        .filter(|m| m.no_log_request || m.no_log_response)
        .map(|m| format!(".{}", m.full_name))
        .collect();
    let mut config = prost_build::Config::new();
    config.out_dir(&out);
    config.skip_debug(redacted.iter().map(String::as_str));
    // Optional serde support (feature `serde`): scripts (Lua) read and build messages as tables.
    config.type_attribute(
        ".lattice",
        "#[cfg_attr(feature = \"serde\", derive(serde::Serialize, serde::Deserialize))]",
    );
    config
        .compile_fds(compiler.file_descriptor_set())
        .unwrap_or_else(|e| fail(&[format!("prost-build: {e}")]));
    // `decode` lends prost the frame body (src/body_buf.rs): sound only while no message holds a
    // `bytes::Bytes` field, which would keep the borrowed bytes past the call.
    let generated = std::fs::read_to_string(out.join("lattice.rs"))
        .unwrap_or_else(|e| fail(&[format!("lattice.rs: {e}")]));
    if generated.contains("::prost::bytes::Bytes") {
        fail(&[
            "a message has a `bytes::Bytes` field (prost_build `bytes(..)`): `decode` lends \
                prost the frame body (proto/src/body_buf.rs), so every `bytes` field must stay \
                a Vec<u8>"
                .to_string(),
        ]);
    }

    write(&out.join("registry.rs"), &registry_rs(&msgs));
    // The descriptors themselves, with their imports (options.proto needs descriptor.proto), for
    // mapping messages to and from JSON at run time (HTTP RPC).
    compiler.include_imports(true);
    std::fs::write(
        out.join("descriptors.bin"),
        prost_reflect::prost::Message::encode_to_vec(&compiler.file_descriptor_set()),
    )
    .unwrap_or_else(|e| fail(&[format!("descriptors.bin: {e}")]));

    let ts_dir = out.join("ts");
    std::fs::create_dir_all(&ts_dir)
        .unwrap_or_else(|e| fail(&[format!("{}: {e}", ts_dir.display())]));
    let icon_text = std::fs::read_to_string(&icons_path)
        .unwrap_or_else(|e| fail(&[format!("{}: {e}", icons_path.display())]));
    let icon_decls = icons::parse(&icon_text).unwrap_or_else(|e| fail(&[e.to_string()]));
    let consts = build_ts::Consts {
        protocol_version: version::PROTOCOL.to_string(),
        error_codes: &error_code::ALL,
        icons: &icon_decls,
    };
    match build_ts::generate(&msgs, &enums, &consts) {
        Ok(files) => {
            let mut index = String::from("&[\n");
            for (name, text) in &files {
                write(&ts_dir.join(name), text);
                writeln!(
                    index,
                    "    ({name:?}, include_str!(concat!(env!(\"OUT_DIR\"), \"/ts/{name}\"))),"
                )
                .expect("write to String");
            }
            index.push_str("]\n");
            write(&out.join("ts_files.rs"), &index);
        }
        Err(e) => fail(&[format!("TypeScript exporter: {e}")]),
    }

    build_fixture(&proto_root, &manifest.join("fixtures"), &out);
}

/// One compiled set of `.proto` files.
struct Loaded {
    compiler: protox::Compiler,
    decls: Vec<lockfile::Decl>,
    msgs: Vec<Msg>,
    enums: Vec<EnumDef>,
}

/// Compiles `files` (relative to one of `includes`) and reads every message's Lattice options.
fn load(includes: &[&Path], files: &[PathBuf]) -> Loaded {
    let mut compiler =
        protox::Compiler::new(includes).unwrap_or_else(|e| fail(&[format!("protox: {e}")]));
    compiler.include_imports(false).include_source_info(false);
    compiler
        .open_files(files)
        .unwrap_or_else(|e| fail(&[format!("protox: {e:?}")]));
    let pool = compiler.descriptor_pool();

    let ext = |name: &str| {
        pool.get_extension_by_name(name).unwrap_or_else(|| {
            fail(&[format!(
                "option {name} not declared (lattice/options.proto missing?)"
            )])
        })
    };
    let (x_opcode, x_nlreq, x_nlresp, x_noclient, x_noop) = (
        ext("lattice.opcode"),
        ext("lattice.no_log_request"),
        ext("lattice.no_log_response"),
        ext("lattice.no_client"),
        ext("lattice.no_opcode"),
    );

    let mut decls = Vec::new();
    let mut msgs = Vec::new();
    let mut problems = Vec::new();
    for m in pool.all_messages() {
        if m.full_name().starts_with("google.") {
            continue;
        }
        if m.package_name() != "lattice" {
            problems.push(format!(
                "message {} is in package `{}`: all Lattice messages live in package `lattice`",
                m.full_name(),
                m.package_name()
            ));
            continue;
        }
        let opts = m.options();
        let flag = |x| matches!(opts.get_extension(x).as_ref(), Value::Bool(true));
        let opcode = if opts.has_extension(&x_opcode) {
            match opts.get_extension(&x_opcode).as_ref() {
                Value::U32(v) => Some(*v),
                other => fail(&[format!("{}: opcode is {other:?}", m.full_name())]),
            }
        } else {
            None
        };
        let nested = m.parent_message().is_some();
        if !m.is_map_entry() {
            decls.push(lockfile::Decl {
                full_name: m.full_name().to_string(),
                opcode,
                no_opcode: flag(&x_noop),
                nested,
            });
        }
        msgs.push(Msg {
            full_name: m.full_name().to_string(),
            rust_path: rust_path(&m),
            ts_name: ts_name(m.full_name()),
            short_name: m.name().to_string(),
            opcode: opcode.and_then(|o| u16::try_from(o).ok()),
            no_log_request: flag(&x_nlreq),
            no_log_response: flag(&x_nlresp),
            no_client: flag(&x_noclient),
            fields: fields_of(&m),
            is_map_entry: m.is_map_entry(),
        });
    }
    if !problems.is_empty() {
        fail(&problems);
    }
    let enums = pool
        .all_enums()
        .filter(|e| e.package_name() == "lattice")
        .map(|e| EnumDef {
            ts_name: ts_name(e.full_name()),
            values: e
                .values()
                .map(|v| (v.name().to_string(), v.number()))
                .collect(),
        })
        .collect();
    Loaded {
        compiler,
        decls,
        msgs,
        enums,
    }
}

/// The generator test fixture (`fixtures/`): every field shape the TypeScript exporter supports,
/// compiled to Rust (`OUT_DIR/fixture/lattice.rs`) and TypeScript (`OUT_DIR/ts-fixture/`) for
/// `tests/fixture.rs`. Not part of the library.
fn build_fixture(proto_root: &Path, fixture_root: &Path, out: &Path) {
    let files = vec![PathBuf::from("lattice/fixture.proto")];
    let loaded = load(&[fixture_root, proto_root], &files);
    let dir = out.join("fixture");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| fail(&[format!("{}: {e}", dir.display())]));
    prost_build::Config::new()
        .out_dir(&dir)
        .compile_fds(loaded.compiler.file_descriptor_set())
        .unwrap_or_else(|e| fail(&[format!("prost-build (fixture): {e}")]));
    let consts = build_ts::Consts {
        protocol_version: version::PROTOCOL.to_string(),
        error_codes: &error_code::ALL,
        icons: &[],
    };
    let ts_dir = out.join("ts-fixture");
    std::fs::create_dir_all(&ts_dir)
        .unwrap_or_else(|e| fail(&[format!("{}: {e}", ts_dir.display())]));
    match build_ts::generate(&loaded.msgs, &loaded.enums, &consts) {
        Ok(files) => {
            for (name, text) in files
                .iter()
                .filter(|(n, _)| n == "messages.ts" || n == "protocol.ts")
            {
                write(&ts_dir.join(name), text);
            }
        }
        Err(e) => fail(&[format!("TypeScript exporter (fixture): {e}")]),
    }
}

fn fail(lines: &[String]) -> ! {
    for l in lines {
        eprintln!("error: {l}");
        println!("cargo:warning={l}");
    }
    std::process::exit(1);
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text)
        .unwrap_or_else(|e| fail(&[format!("writing {}: {e}", path.display())]));
}

fn collect_protos(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| fail(&[format!("{}: {e}", dir.display())]));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| fail(&[format!("{}: {e}", dir.display())]))
            .path();
        if path.is_dir() {
            collect_protos(root, &path, out);
        } else if path.extension().is_some_and(|x| x == "proto") {
            out.push(path.strip_prefix(root).expect("below root").to_path_buf());
        }
    }
}

/// `lattice.Outer.Inner` → `outer::Inner`, the way prost-build names it.
fn rust_path(m: &MessageDescriptor) -> String {
    let mut chain = vec![m.name().to_upper_camel_case()];
    let mut p = m.parent_message();
    while let Some(parent) = p {
        chain.push(parent.name().to_snake_case());
        p = parent.parent_message();
    }
    chain.reverse();
    chain.join("::")
}

/// `lattice.Outer.Inner` → `Outer_Inner`.
pub fn ts_name(full_name: &str) -> String {
    full_name
        .strip_prefix("lattice.")
        .unwrap_or(full_name)
        .replace('.', "_")
}

fn fields_of(m: &MessageDescriptor) -> Vec<Field> {
    m.fields()
        .map(|f| {
            let kind = match f.kind() {
                Kind::Double => FieldKind::Scalar("double"),
                Kind::Float => FieldKind::Scalar("float"),
                Kind::Int32 => FieldKind::Scalar("int32"),
                Kind::Int64 => FieldKind::Scalar("int64"),
                Kind::Uint32 => FieldKind::Scalar("uint32"),
                Kind::Uint64 => FieldKind::Scalar("uint64"),
                Kind::Sint32 => FieldKind::Scalar("sint32"),
                Kind::Sint64 => FieldKind::Scalar("sint64"),
                Kind::Fixed32 => FieldKind::Scalar("fixed32"),
                Kind::Fixed64 => FieldKind::Scalar("fixed64"),
                Kind::Sfixed32 => FieldKind::Scalar("sfixed32"),
                Kind::Sfixed64 => FieldKind::Scalar("sfixed64"),
                Kind::Bool => FieldKind::Scalar("bool"),
                Kind::String => FieldKind::Scalar("string"),
                Kind::Bytes => FieldKind::Scalar("bytes"),
                Kind::Enum(e) => FieldKind::Enum(e.full_name().to_string()),
                Kind::Message(mm) => FieldKind::Message(mm.full_name().to_string()),
            };
            Field {
                name: f.name().to_string(),
                ts_name: f.name().to_lower_camel_case(),
                number: f.number(),
                kind,
                repeated: f.cardinality() == Cardinality::Repeated,
                optional: f.supports_presence() && !matches!(f.kind(), Kind::Message(_)),
                is_map: f.is_map(),
                sort_key: f
                    .containing_oneof()
                    .filter(|o| !o.is_synthetic())
                    .and_then(|o| o.fields().map(|x| x.number()).min())
                    .unwrap_or(f.number()),
            }
        })
        .collect()
}

/// For a message whose only field is a singular, non-`optional` `bytes` field numbered 1–15:
/// that field's one-byte protobuf key (number × 8 + 2, length-delimited) and its Rust name.
fn single_bytes_field(m: &Msg) -> Option<(u8, String)> {
    let [f] = m.fields.as_slice() else {
        return None;
    };
    let plain = matches!(f.kind, FieldKind::Scalar("bytes")) && !f.repeated && !f.optional;
    // Field names that prost would escape (`r#type`) or rename are left to prost.
    let name = f.name.to_snake_case();
    let simple = name == f.name && !matches!(name.as_str(), "type" | "self" | "super" | "crate");
    (plain && simple && (1..=15).contains(&f.number)).then_some(((f.number as u8) << 3 | 2, name))
}

fn registry_rs(msgs: &[Msg]) -> String {
    let mut with_op: Vec<&Msg> = msgs.iter().filter(|m| m.opcode.is_some()).collect();
    with_op.sort_by_key(|m| m.opcode);
    let mut s = String::from(
        "// @generated by lattice-proto/build.rs from proto/**/*.proto. Do not edit.\n\n",
    );

    s.push_str("/// Opcode of every message, named after the message (`JoinRoom` → `JOIN_ROOM`).\npub mod opcode {\n");
    for m in &with_op {
        let op = m.opcode.expect("filtered");
        writeln!(
            s,
            "    /// `{}`.\n    pub const {}: u16 = {op};",
            m.full_name,
            m.short_name.to_shouty_snake_case()
        )
        .expect("fmt");
    }
    s.push_str("}\n\n");

    writeln!(
        s,
        "/// Number of messages with an opcode ([`OpcodeInfo::index`] is below it).\npub const COUNT: usize = {};\n",
        with_op.len()
    )
    .expect("fmt");
    // A `const` (the `static` below is its copy) so lib.rs can build the opcode index from it
    // at compile time.
    writeln!(s, "const INFO_TABLE: [OpcodeInfo; {}] = [", with_op.len()).expect("fmt");
    for (index, m) in with_op.iter().enumerate() {
        writeln!(
            s,
            "    OpcodeInfo {{ opcode: {}, index: {index}, name: {:?}, full_name: {:?}, no_log_request: {}, no_log_response: {}, no_client: {} }},",
            m.opcode.expect("filtered"),
            m.short_name,
            m.full_name,
            m.no_log_request,
            m.no_log_response,
            m.no_client
        )
        .expect("fmt");
    }
    s.push_str("];\n\n");
    writeln!(
        s,
        "static INFOS: [OpcodeInfo; {}] = INFO_TABLE;\n",
        with_op.len()
    )
    .expect("fmt");

    for m in &with_op {
        writeln!(
            s,
            "impl LatticeMessage for pb::{p} {{\n    const OPCODE: u16 = {op};\n    const NAME: &'static str = {n:?};\n\n    \
             #[allow(unreachable_patterns)]\n    #[inline]\n    fn from_any(m: AnyMessage) -> Option<Self> {{\n        match m {{\n            \
             AnyMessage::{v}(x) => Some(x),\n            _ => None,\n        }}\n    }}\n}}\n",
            p = m.rust_path,
            op = m.opcode.expect("filtered"),
            n = m.short_name,
            v = m.short_name.to_upper_camel_case()
        )
        .expect("fmt");
        writeln!(
            s,
            "impl From<pb::{p}> for AnyMessage {{\n    fn from(m: pb::{p}) -> Self {{\n        AnyMessage::{v}(m)\n    }}\n}}\n",
            p = m.rust_path,
            v = m.short_name.to_upper_camel_case()
        )
        .expect("fmt");
    }
    for m in msgs
        .iter()
        .filter(|m| m.no_log_request || m.no_log_response)
    {
        writeln!(
            s,
            "/// Redacted: this message is marked no-log, its fields are never printed.\n\
             impl core::fmt::Debug for pb::{p} {{\n    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {{\n        f.debug_struct({n:?}).finish_non_exhaustive()\n    }}\n}}\n",
            p = m.rust_path,
            n = m.short_name
        )
        .expect("fmt");
    }

    s.push_str(
        "/// Any message that has an opcode, decoded. `Debug` prints no-log messages as `Name { .. }`.\n\
         #[derive(Clone, PartialEq, Debug)]\npub enum AnyMessage {\n",
    );
    for m in &with_op {
        writeln!(
            s,
            "    /// `{}` (opcode {}).\n    {}(pb::{}),",
            m.full_name,
            m.opcode.expect("filtered"),
            m.short_name.to_upper_camel_case(),
            m.rust_path
        )
        .expect("fmt");
    }
    s.push_str("}\n\nimpl AnyMessage {\n    /// The opcode of the message held.\n    pub fn opcode(&self) -> u16 {\n        match self {\n");
    for m in &with_op {
        writeln!(
            s,
            "            AnyMessage::{}(_) => {},",
            m.short_name.to_upper_camel_case(),
            m.opcode.expect("filtered")
        )
        .expect("fmt");
    }
    s.push_str("        }\n    }\n\n    /// Appends the protobuf encoding of the message held to `buf` (never fails: `Vec` grows).\n    pub fn encode_body(&self, buf: &mut Vec<u8>) {\n        match self {\n");
    for m in &with_op {
        writeln!(
            s,
            "            AnyMessage::{}(m) => prost::Message::encode_raw(m, buf),",
            m.short_name.to_upper_camel_case()
        )
        .expect("fmt");
    }
    s.push_str("        }\n    }\n\n    /// Length in bytes of the protobuf encoding of the message held.\n    pub fn encoded_len(&self) -> usize {\n        match self {\n");
    for m in &with_op {
        writeln!(
            s,
            "            AnyMessage::{}(m) => prost::Message::encoded_len(m),",
            m.short_name.to_upper_camel_case()
        )
        .expect("fmt");
    }
    s.push_str("        }\n    }\n}\n\n");

    s.push_str(
        "/// Decodes `body` as the message registered for `opcode`.\n\
         ///\n/// Cost: one protobuf decode (for a message that is one `bytes` field, written once: one exact\n/// allocation and copy, `fast_decode.rs`). Fails with [`DecodeError::UnknownOpcode`] when no message has this opcode,\n\
         /// [`DecodeError::Body`] when the bytes are not a valid encoding of it.\n\
         pub fn decode(opcode: u16, body: &[u8]) -> Result<AnyMessage, DecodeError> {\n    match opcode {\n",
    );
    for m in &with_op {
        let prost = format!(
            "<pb::{p} as prost::Message>::decode(crate::body_buf::BodyBuf::new(body)).map(AnyMessage::{v}).map_err(|source| DecodeError::Body {{ opcode: {op}, name: {n:?}, source }})",
            op = m.opcode.expect("filtered"),
            p = m.rust_path,
            v = m.short_name.to_upper_camel_case(),
            n = m.short_name
        );
        // A message whose only field is one `bytes` field takes the shortcut of
        // src/fast_decode.rs when the body is exactly that field; prost decides every other body.
        match single_bytes_field(m) {
            Some((key, field)) => writeln!(
                s,
                "        {op} => match crate::fast_decode::single_bytes_field(body, {key:#04x}) {{\n            Some(b) => Ok(AnyMessage::{v}(pb::{p} {{ {field}: b.to_vec() }})),\n            None => {prost},\n        }},",
                op = m.opcode.expect("filtered"),
                p = m.rust_path,
                v = m.short_name.to_upper_camel_case(),
            ),
            None => writeln!(s, "        {op} => {prost},", op = m.opcode.expect("filtered")),
        }
        .expect("fmt");
    }
    s.push_str("        _ => Err(DecodeError::UnknownOpcode(opcode)),\n    }\n}\n");

    // Feature `serde`: a message by opcode from any deserializer, and AnyMessage as its message.
    s.push_str(
        "\n/// Deserializes the message registered for `opcode` (feature `serde`). `None` when no\n\
         /// message has this opcode.\n\
         #[cfg(feature = \"serde\")]\n\
         pub fn deserialize_as<'de, D: serde::Deserializer<'de>>(opcode: u16, d: D) -> Result<Option<AnyMessage>, D::Error> {\n    match opcode {\n",
    );
    for m in &with_op {
        writeln!(
            s,
            "        {op} => <pb::{p} as serde::Deserialize>::deserialize(d).map(|m| Some(AnyMessage::{v}(m))),",
            op = m.opcode.expect("filtered"),
            p = m.rust_path,
            v = m.short_name.to_upper_camel_case(),
        )
        .expect("fmt");
    }
    s.push_str("        _ => Ok(None),\n    }\n}\n\n");
    s.push_str(
        "/// The message registered for `opcode` with every field at its default. `None` when no\n\
         /// message has this opcode.\n\
         pub fn default_of(opcode: u16) -> Option<AnyMessage> {\n    match opcode {\n",
    );
    for m in &with_op {
        writeln!(
            s,
            "        {op} => Some(AnyMessage::{v}(pb::{p}::default())),",
            op = m.opcode.expect("filtered"),
            p = m.rust_path,
            v = m.short_name.to_upper_camel_case(),
        )
        .expect("fmt");
    }
    s.push_str("        _ => None,\n    }\n}\n\n");
    s.push_str(
        "/// Serializes the message held (feature `serde`), as the message itself.\n\
         #[cfg(feature = \"serde\")]\n\
         impl serde::Serialize for AnyMessage {\n    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {\n        match self {\n",
    );
    for m in &with_op {
        writeln!(
            s,
            "            AnyMessage::{}(m) => serde::Serialize::serialize(m, ser),",
            m.short_name.to_upper_camel_case()
        )
        .expect("fmt");
    }
    s.push_str("        }\n    }\n}\n");
    s
}
