//! The few ONNX protobuf messages dataleaf reads, decoded straight from the wire format.
//!
//! An `.onnx` file is one `ModelProto`. Reading it needs no protobuf compiler and no generated code:
//! the wire format is a sequence of (field number, wire type, payload) records, and only the fields
//! below matter for a CNN exported by `torch.onnx.export`. Unknown fields are skipped, as protobuf
//! readers must. Every length is checked against the bytes left, so a truncated or garbage file
//! gives an error, never a panic or a huge allocation. Field numbers are onnx.proto3's.

/// Why the bytes are not an ONNX model.
#[derive(Debug, Clone, PartialEq)]
pub struct WireError(pub String);

type Result<T> = std::result::Result<T, WireError>;

fn err<T>(message: impl Into<String>) -> Result<T> {
    Err(WireError(message.into()))
}

/// A protobuf field's payload.
enum Value<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Bytes(&'a [u8]),
    Fixed32([u8; 4]),
}

/// Iterates the (field number, payload) records of one message.
struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Fields { bytes, at: 0 }
    }

    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.bytes.get(self.at) else {
                return err("the file ends inside a number (truncated?)");
            };
            self.at += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        err("a number is longer than 10 bytes (not a protobuf file?)")
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        if len > self.bytes.len() - self.at {
            return err(format!(
                "a field of {len} bytes runs past the end of the file (truncated?)"
            ));
        }
        let out = &self.bytes[self.at..self.at + len];
        self.at += len;
        Ok(out)
    }

    fn next_field(&mut self) -> Option<Result<(u32, Value<'a>)>> {
        if self.at >= self.bytes.len() {
            return None;
        }
        Some(self.read_field())
    }

    fn read_field(&mut self) -> Result<(u32, Value<'a>)> {
        let key = self.varint()?;
        let field = (key >> 3) as u32;
        if field == 0 {
            return err("field number 0 (not a protobuf file?)");
        }
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => Value::Fixed64(self.take(8)?.try_into().expect("8 bytes")),
            2 => {
                let len = usize::try_from(self.varint()?).unwrap_or(usize::MAX);
                Value::Bytes(self.take(len)?)
            }
            5 => Value::Fixed32(self.take(4)?.try_into().expect("4 bytes")),
            t => return err(format!("wire type {t} is not used by ONNX (not an ONNX file?)")),
        };
        Ok((field, value))
    }
}

/// Calls `f` for every field of a message.
fn each_field<'a>(bytes: &'a [u8], mut f: impl FnMut(u32, Value<'a>) -> Result<()>) -> Result<()> {
    let mut fields = Fields::new(bytes);
    while let Some(item) = fields.next_field() {
        let (n, v) = item?;
        f(n, v)?;
    }
    Ok(())
}

fn string(v: Value) -> Result<String> {
    match v {
        Value::Bytes(b) => String::from_utf8(b.to_vec()).map_err(|_| WireError("a name is not UTF-8".into())),
        _ => err("a string field has the wrong wire type"),
    }
}

fn bytes(v: Value<'_>) -> Result<&[u8]> {
    match v {
        Value::Bytes(b) => Ok(b),
        _ => err("a message field has the wrong wire type"),
    }
}

fn int(v: Value) -> Result<i64> {
    match v {
        Value::Varint(x) => Ok(x as i64),
        _ => err("an integer field has the wrong wire type"),
    }
}

/// Repeated int64: packed (one length-delimited run) or one varint per record.
fn push_ints(v: Value, out: &mut Vec<i64>) -> Result<()> {
    match v {
        Value::Varint(x) => out.push(x as i64),
        Value::Bytes(b) => {
            let mut f = Fields::new(b);
            while f.at < b.len() {
                out.push(f.varint()? as i64);
            }
        }
        _ => return err("an integer list has the wrong wire type"),
    }
    Ok(())
}

/// Repeated float: packed or one fixed32 per record.
fn push_floats(v: Value, out: &mut Vec<f32>) -> Result<()> {
    match v {
        Value::Fixed32(b) => out.push(f32::from_le_bytes(b)),
        Value::Bytes(b) => {
            if b.len() % 4 != 0 {
                return err("a float list is not a whole number of floats");
            }
            out.extend(
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4"))),
            );
        }
        _ => return err("a float list has the wrong wire type"),
    }
    Ok(())
}

/// Repeated double: packed or one fixed64 per record.
fn push_doubles(v: Value, out: &mut Vec<f64>) -> Result<()> {
    match v {
        Value::Fixed64(b) => out.push(f64::from_le_bytes(b)),
        Value::Bytes(b) => {
            if b.len() % 8 != 0 {
                return err("a double list is not a whole number of doubles");
            }
            out.extend(
                b.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().expect("8"))),
            );
        }
        _ => return err("a double list has the wrong wire type"),
    }
    Ok(())
}

/// ONNX `TensorProto.DataType` values dataleaf reads.
pub mod dtype {
    pub const FLOAT: i64 = 1;
    pub const INT32: i64 = 6;
    pub const INT64: i64 = 7;
    pub const BOOL: i64 = 9;
    pub const FLOAT16: i64 = 10;
    pub const DOUBLE: i64 = 11;
    pub const BFLOAT16: i64 = 16;

    pub fn name(t: i64) -> &'static str {
        match t {
            FLOAT => "float32",
            2 => "uint8",
            3 => "int8",
            4 => "uint16",
            5 => "int16",
            INT32 => "int32",
            INT64 => "int64",
            8 => "string",
            BOOL => "bool",
            FLOAT16 => "float16",
            DOUBLE => "float64",
            12 => "uint32",
            13 => "uint64",
            BFLOAT16 => "bfloat16",
            _ => "an unknown type",
        }
    }
}

/// A tensor (initializer, Constant value), its data widened to f64 (ints are exact up to 2^53).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TensorProto {
    pub name: String,
    pub dims: Vec<i64>,
    pub data_type: i64,
    pub data: Vec<f64>,
    /// Where the values are when they live in a file beside the model (`data` is then empty).
    pub external: Option<External>,
}

/// A tensor's values in an external data file: `length` bytes at `offset` of `location`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct External {
    pub location: String,
    pub offset: usize,
    pub length: Option<usize>,
}

impl TensorProto {
    fn parse(b: &[u8]) -> Result<TensorProto> {
        let mut t = TensorProto::default();
        let (mut floats, mut doubles, mut ints) = (Vec::new(), Vec::new(), Vec::new());
        let mut raw: Option<&[u8]> = None;
        let mut external = false;
        let mut entries: Vec<(String, String)> = Vec::new();
        each_field(b, |n, v| {
            match n {
                1 => push_ints(v, &mut t.dims)?,
                2 => t.data_type = int(v)?,
                4 => push_floats(v, &mut floats)?,
                5 | 7 => push_ints(v, &mut ints)?,
                8 => t.name = string(v)?,
                9 => raw = Some(bytes(v)?),
                10 => push_doubles(v, &mut doubles)?,
                // StringStringEntryProto: key (1), value (2)
                13 => {
                    let (mut key, mut value) = (String::new(), String::new());
                    each_field(bytes(v)?, |n, v| {
                        match n {
                            1 => key = string(v)?,
                            2 => value = string(v)?,
                            _ => {}
                        }
                        Ok(())
                    })?;
                    entries.push((key, value));
                }
                14 => external = int(v)? == 1,
                _ => {}
            }
            Ok(())
        })?;
        let what = if t.name.is_empty() {
            "a tensor".to_string()
        } else {
            format!("tensor {:?}", t.name)
        };
        if t.dims.iter().any(|&d| d < 0) {
            return err(format!("{what} has a negative dimension"));
        }
        let count = t
            .dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize))
            .filter(|&c| c <= super::arch::MAX_ACTIVATION)
            .ok_or_else(|| WireError(format!("{what} has too many values")))?;
        if external {
            let get = |k: &str| entries.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
            let number = |k: &str| -> Result<Option<usize>> {
                get(k)
                    .map(|v| {
                        v.parse::<usize>()
                            .map_err(|_| WireError(format!("{what}: external {k} {v:?} is not a number")))
                    })
                    .transpose()
            };
            t.external = Some(External {
                location: get("location")
                    .ok_or_else(|| WireError(format!("{what} is external but names no location")))?
                    .to_string(),
                offset: number("offset")?.unwrap_or(0),
                length: number("length")?,
            });
            return Ok(t);
        }
        t.data = match raw {
            Some(raw) => {
                decode_raw(raw, t.data_type, count).map_err(|m| WireError(format!("{what}: {m}")))?
            }
            None => match t.data_type {
                dtype::FLOAT => floats.iter().map(|&v| v as f64).collect(),
                dtype::DOUBLE => doubles,
                // float16 / bfloat16 stored as their bits in int32_data.
                dtype::FLOAT16 => ints.iter().map(|&v| f16_to_f32(v as u16) as f64).collect(),
                dtype::BFLOAT16 => ints.iter().map(|&v| bf16_to_f32(v as u16) as f64).collect(),
                _ => ints.iter().map(|&v| v as f64).collect(),
            },
        };
        if t.data.len() != count {
            return err(format!(
                "{what} has shape {:?} ({count} values) but holds {}",
                t.dims,
                t.data.len()
            ));
        }
        Ok(t)
    }

    /// The shape as sizes.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().map(|&d| d as usize).collect()
    }
}

/// Little-endian raw_data of one element type, widened to f64.
pub fn decode_raw(raw: &[u8], data_type: i64, count: usize) -> std::result::Result<Vec<f64>, String> {
    let width = match data_type {
        dtype::FLOAT | dtype::INT32 => 4,
        dtype::INT64 | dtype::DOUBLE => 8,
        dtype::FLOAT16 | dtype::BFLOAT16 => 2,
        dtype::BOOL | 2 | 3 => 1,
        t => return Err(format!("values of type {} are not supported", dtype::name(t))),
    };
    if raw.len() != count * width {
        return Err(format!(
            "holds {} bytes of data, its shape needs {}",
            raw.len(),
            count * width
        ));
    }
    let c = raw.chunks_exact(width);
    Ok(match data_type {
        dtype::FLOAT => c
            .map(|b| f32::from_le_bytes(b.try_into().expect("4")) as f64)
            .collect(),
        dtype::INT32 => c
            .map(|b| i32::from_le_bytes(b.try_into().expect("4")) as f64)
            .collect(),
        dtype::INT64 => c
            .map(|b| i64::from_le_bytes(b.try_into().expect("8")) as f64)
            .collect(),
        dtype::DOUBLE => c.map(|b| f64::from_le_bytes(b.try_into().expect("8"))).collect(),
        dtype::FLOAT16 => c
            .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])) as f64)
            .collect(),
        dtype::BFLOAT16 => c
            .map(|b| bf16_to_f32(u16::from_le_bytes([b[0], b[1]])) as f64)
            .collect(),
        3 => c.map(|b| b[0] as i8 as f64).collect(),
        _ => c.map(|b| b[0] as f64).collect(),
    })
}

/// IEEE half precision to single (exact: every f16 is an f32).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let mant = u32::from(h & 0x3ff);
    let bits = match (exp, mant) {
        (0, 0) => sign,
        // Subnormal: mant * 2^-24.
        (0, m) => {
            let v = m as f32 * 2f32.powi(-24);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// bfloat16 is the top half of an f32.
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// A node attribute: the kinds CNN exports use.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Attribute {
    pub name: String,
    pub f: Option<f32>,
    pub i: Option<i64>,
    pub s: Option<String>,
    pub t: Option<TensorProto>,
    pub floats: Vec<f32>,
    pub ints: Vec<i64>,
}

impl Attribute {
    fn parse(b: &[u8]) -> Result<Attribute> {
        let mut a = Attribute::default();
        each_field(b, |n, v| {
            match n {
                1 => a.name = string(v)?,
                2 => {
                    let mut f = Vec::new();
                    push_floats(v, &mut f)?;
                    a.f = f.first().copied();
                }
                3 => a.i = Some(int(v)?),
                4 => a.s = Some(String::from_utf8_lossy(bytes(v)?).into_owned()),
                5 => a.t = Some(TensorProto::parse(bytes(v)?)?),
                7 => push_floats(v, &mut a.floats)?,
                8 => push_ints(v, &mut a.ints)?,
                _ => {}
            }
            Ok(())
        })?;
        Ok(a)
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeProto {
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub name: String,
    pub op_type: String,
    pub domain: String,
    pub attributes: Vec<Attribute>,
}

impl NodeProto {
    fn parse(b: &[u8]) -> Result<NodeProto> {
        let mut node = NodeProto::default();
        each_field(b, |n, v| {
            match n {
                1 => node.inputs.push(string(v)?),
                2 => node.outputs.push(string(v)?),
                3 => node.name = string(v)?,
                4 => node.op_type = string(v)?,
                5 => node.attributes.push(Attribute::parse(bytes(v)?)?),
                7 => node.domain = string(v)?,
                _ => {}
            }
            Ok(())
        })?;
        Ok(node)
    }

    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.name == name)
    }
}

/// One dimension of a declared shape: a number, a symbolic name, or nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum Dim {
    Value(i64),
    Param(String),
    Unknown,
}

/// A graph input or output: its name, element type and shape (when declared).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ValueInfo {
    pub name: String,
    pub elem_type: i64,
    pub dims: Option<Vec<Dim>>,
}

impl ValueInfo {
    fn parse(b: &[u8]) -> Result<ValueInfo> {
        let mut info = ValueInfo::default();
        each_field(b, |n, v| {
            match n {
                1 => info.name = string(v)?,
                // TypeProto.tensor_type (1) -> elem_type (1), shape (2) -> dim (1)
                2 => each_field(bytes(v)?, |n, v| {
                    if n == 1 {
                        each_field(bytes(v)?, |n, v| {
                            match n {
                                1 => info.elem_type = int(v)?,
                                2 => {
                                    let mut dims = Vec::new();
                                    each_field(bytes(v)?, |n, v| {
                                        if n == 1 {
                                            let mut dim = Dim::Unknown;
                                            each_field(bytes(v)?, |n, v| {
                                                match n {
                                                    1 => dim = Dim::Value(int(v)?),
                                                    2 => dim = Dim::Param(string(v)?),
                                                    _ => {}
                                                }
                                                Ok(())
                                            })?;
                                            dims.push(dim);
                                        }
                                        Ok(())
                                    })?;
                                    info.dims = Some(dims);
                                }
                                _ => {}
                            }
                            Ok(())
                        })?;
                    }
                    Ok(())
                })?,
                _ => {}
            }
            Ok(())
        })?;
        Ok(info)
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct GraphProto {
    pub name: String,
    pub nodes: Vec<NodeProto>,
    pub initializers: Vec<TensorProto>,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
}

impl GraphProto {
    fn parse(b: &[u8]) -> Result<GraphProto> {
        let mut g = GraphProto::default();
        each_field(b, |n, v| {
            match n {
                1 => g.nodes.push(NodeProto::parse(bytes(v)?)?),
                2 => g.name = string(v)?,
                5 => g.initializers.push(TensorProto::parse(bytes(v)?)?),
                11 => g.inputs.push(ValueInfo::parse(bytes(v)?)?),
                12 => g.outputs.push(ValueInfo::parse(bytes(v)?)?),
                _ => {}
            }
            Ok(())
        })?;
        Ok(g)
    }
}

/// The parts of a `ModelProto` dataleaf uses.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelProto {
    pub ir_version: i64,
    pub producer_name: String,
    /// The default-domain opset, when declared.
    pub opset: Option<i64>,
    pub graph: Option<GraphProto>,
}

impl ModelProto {
    pub fn parse(b: &[u8]) -> Result<ModelProto> {
        if b.is_empty() {
            return err("the file is empty");
        }
        let mut m = ModelProto::default();
        each_field(b, |n, v| {
            match n {
                1 => m.ir_version = int(v)?,
                2 => m.producer_name = string(v)?,
                7 => m.graph = Some(GraphProto::parse(bytes(v)?)?),
                // OperatorSetIdProto: domain (1), version (2)
                8 => {
                    let (mut domain, mut version) = (String::new(), None);
                    each_field(bytes(v)?, |n, v| {
                        match n {
                            1 => domain = string(v)?,
                            2 => version = Some(int(v)?),
                            _ => {}
                        }
                        Ok(())
                    })?;
                    if domain.is_empty() || domain == "ai.onnx" {
                        m.opset = version;
                    }
                }
                _ => {}
            }
            Ok(())
        })?;
        if m.graph.is_none() {
            return err("no graph inside (not an ONNX model file?)");
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_converts_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [
            &b""[..],
            b"\xff\xff\xff",
            b"\x0a\x05ab",
            b"\x00",
            b"hello world, not onnx",
        ] {
            assert!(ModelProto::parse(bytes).is_err(), "{bytes:?}");
        }
    }
}
