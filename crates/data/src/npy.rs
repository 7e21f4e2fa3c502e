//! The NumPy `.npy` array format: a magic string, a version, a Python dict literal giving the
//! dtype, order and shape, then the raw values.
//!
//! It parses bytes only and returns problems as plain text; the caller knows which file (and which
//! archive member) they came from and names it. It must not interpret the array as images or
//! labels: that is `npz`'s job.

use std::fmt;

/// The element types read: the ones datasets are commonly saved in, little-endian only.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Dtype {
    U8,
    I32,
    I64,
    F32,
    F64,
}

impl Dtype {
    fn size(self) -> usize {
        match self {
            Dtype::U8 => 1,
            Dtype::I32 | Dtype::F32 => 4,
            Dtype::I64 | Dtype::F64 => 8,
        }
    }

    pub(crate) fn is_float(self) -> bool {
        matches!(self, Dtype::F32 | Dtype::F64)
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dtype::U8 => "uint8",
            Dtype::I32 => "int32",
            Dtype::I64 => "int64",
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
        })
    }
}

/// A C-order array: its shape, element type and raw little-endian values (length checked).
#[derive(Debug)]
pub(crate) struct NpyArray {
    pub shape: Vec<usize>,
    pub dtype: Dtype,
    data: Vec<u8>,
}

impl NpyArray {
    /// The values in C order, converted to f64 (exact for every dtype read except int64 beyond
    /// 2^53, which no pixel or label reaches).
    pub(crate) fn values(&self) -> Box<dyn Iterator<Item = f64> + '_> {
        fn le<const N: usize>(bytes: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
            bytes.chunks_exact(N).map(|c| {
                let mut a = [0; N];
                a.copy_from_slice(c);
                a
            })
        }
        match self.dtype {
            Dtype::U8 => Box::new(self.data.iter().map(|&v| f64::from(v))),
            Dtype::I32 => Box::new(le(&self.data).map(|b| f64::from(i32::from_le_bytes(b)))),
            Dtype::I64 => Box::new(le(&self.data).map(|b| i64::from_le_bytes(b) as f64)),
            Dtype::F32 => Box::new(le(&self.data).map(|b| f64::from(f32::from_le_bytes(b)))),
            Dtype::F64 => Box::new(le(&self.data).map(f64::from_le_bytes)),
        }
    }
}

const MAGIC: &[u8] = b"\x93NUMPY";

/// Parses a whole `.npy` file.
pub(crate) fn parse(bytes: &[u8]) -> Result<NpyArray, String> {
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or("not a .npy array (no \\x93NUMPY magic)")?;
    // Version 1 has a 2-byte header length, versions 2 and 3 a 4-byte one.
    let (len_size, rest) = match rest {
        [1, _, rest @ ..] => (2, rest),
        [2 | 3, _, rest @ ..] => (4, rest),
        [major, minor, ..] => return Err(format!(".npy version {major}.{minor} is not supported")),
        _ => return Err("the file ends inside the .npy header".into()),
    };
    let (len_bytes, rest) = split(rest, len_size)?;
    let header_len = len_bytes
        .iter()
        .rev()
        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    let (header, data) = split(rest, header_len)?;
    let header = std::str::from_utf8(header).map_err(|_| "the .npy header is not text")?;
    let (dtype, shape) = parse_header(header)?;
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} overflows"))?;
    let expected = count.checked_mul(dtype.size());
    if expected != Some(data.len()) {
        return Err(format!(
            "header declares shape {shape:?} of {dtype} ({count} values) but {} bytes of data follow; \
             is it truncated?",
            data.len()
        ));
    }
    Ok(NpyArray {
        shape,
        dtype,
        data: data.to_vec(),
    })
}

fn split(bytes: &[u8], at: usize) -> Result<(&[u8], &[u8]), String> {
    if at > bytes.len() {
        return Err("the file ends inside the .npy header".into());
    }
    Ok(bytes.split_at(at))
}

/// Reads the header dict, e.g. `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`.
fn parse_header(text: &str) -> Result<(Dtype, Vec<usize>), String> {
    let bad = |why: &str| format!("cannot read the .npy header {:?}: {why}", text.trim_end());
    let mut p = Parser { rest: text };
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    p.expect('{').map_err(|e| bad(&e))?;
    while !p.eat('}') {
        let key = p.string().map_err(|e| bad(&e))?;
        p.expect(':').map_err(|e| bad(&e))?;
        let value = p.value().map_err(|e| bad(&e))?;
        match (key.as_str(), value) {
            ("descr", Value::Str(s)) => descr = Some(s),
            ("fortran_order", Value::Bool(b)) => fortran = Some(b),
            ("shape", Value::Tuple(t)) => shape = Some(t),
            (key @ ("descr" | "fortran_order" | "shape"), _) => {
                return Err(bad(&format!("'{key}' has the wrong kind of value")))
            }
            // Later versions may add keys; the three above are all that is needed.
            _ => {}
        }
        if !p.eat(',') {
            p.expect('}').map_err(|e| bad(&e))?;
            break;
        }
    }
    let (Some(descr), Some(fortran), Some(shape)) = (descr, fortran, shape) else {
        return Err(bad(
            "'descr', 'fortran_order' and 'shape' must all be given",
        ));
    };
    if fortran {
        return Err(
            "the array is in Fortran (column-major) order; save it in C order (np.ascontiguousarray)"
                .into(),
        );
    }
    Ok((dtype(&descr)?, shape))
}

fn dtype(descr: &str) -> Result<Dtype, String> {
    Ok(match descr {
        "|u1" | "<u1" | "u1" => Dtype::U8,
        "<i4" => Dtype::I32,
        "<i8" => Dtype::I64,
        "<f4" => Dtype::F32,
        "<f8" => Dtype::F64,
        d if d.starts_with('>') => {
            return Err(format!(
                "dtype '{d}' is big-endian; save the array little-endian"
            ))
        }
        d => {
            return Err(format!(
                "dtype '{d}' is not supported; use uint8, int32, int64, float32 or float64"
            ))
        }
    })
}

enum Value {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
}

/// Just enough of Python literal syntax for `.npy` headers.
struct Parser<'a> {
    rest: &'a str,
}

impl Parser<'_> {
    fn skip_space(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_space();
        match self.rest.strip_prefix(c) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected '{c}' at {:?}", self.rest))
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.skip_space();
        let quote = match self.rest.chars().next() {
            Some(q @ ('\'' | '"')) => q,
            _ => return Err(format!("expected a quoted string at {:?}", self.rest)),
        };
        let body = &self.rest[1..];
        let end = body
            .find(quote)
            .ok_or_else(|| "a string is not closed".to_string())?;
        self.rest = &body[end + 1..];
        Ok(body[..end].to_string())
    }

    fn value(&mut self) -> Result<Value, String> {
        self.skip_space();
        for (word, b) in [("True", true), ("False", false)] {
            if let Some(rest) = self.rest.strip_prefix(word) {
                self.rest = rest;
                return Ok(Value::Bool(b));
            }
        }
        if self.eat('(') {
            let mut dims = Vec::new();
            while !self.eat(')') {
                dims.push(self.integer()?);
                if !self.eat(',') {
                    self.expect(')')?;
                    break;
                }
            }
            return Ok(Value::Tuple(dims));
        }
        self.string().map(Value::Str)
    }

    fn integer(&mut self) -> Result<usize, String> {
        self.skip_space();
        let digits = self.rest.len()
            - self
                .rest
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .len();
        let (number, rest) = self.rest.split_at(digits);
        let n = number
            .parse()
            .map_err(|_| format!("expected a dimension at {:?}", self.rest))?;
        // Python 2 wrote long integers with an `L` suffix.
        self.rest = rest.strip_prefix('L').unwrap_or(rest);
        Ok(n)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A version-1 `.npy` file, as NumPy writes it (header padded to a multiple of 64 bytes).
    pub(crate) fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
        npy_with_header(
            &format!(
                "{{'descr': '{descr}', 'fortran_order': False, 'shape': ({}), }}",
                shape.iter().map(|d| format!("{d},")).collect::<String>()
            ),
            data,
        )
    }

    pub(crate) fn npy_with_header(dict: &str, data: &[u8]) -> Vec<u8> {
        // 10 bytes of magic, version and length, then the dict, spaces and a newline.
        let pad = (64 - (10 + dict.len() + 1) % 64) % 64;
        let header = format!("{dict}{}\n", " ".repeat(pad));
        let mut out = MAGIC.to_vec();
        out.extend([1, 0]);
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }

    #[test]
    fn every_supported_dtype_reads_its_values() {
        let cases: [(&str, Vec<u8>, Dtype); 5] = [
            ("|u1", vec![0, 7, 255], Dtype::U8),
            (
                "<i4",
                [0i32, 7, -255]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                Dtype::I32,
            ),
            (
                "<i8",
                [0i64, 7, -255]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                Dtype::I64,
            ),
            (
                "<f4",
                [0f32, 7.0, 0.5]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                Dtype::F32,
            ),
            (
                "<f8",
                [0f64, 7.0, 0.5]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                Dtype::F64,
            ),
        ];
        for (descr, data, dtype) in cases {
            let a = parse(&npy(descr, &[3], &data)).unwrap();
            assert_eq!((a.dtype, a.shape.clone()), (dtype, vec![3]));
            let v: Vec<f64> = a.values().collect();
            assert_eq!(v[1], 7.0, "{descr}");
            assert_eq!(v.len(), 3);
        }
    }

    #[test]
    fn headers_of_other_versions_and_spellings_read() {
        // Version 2 (4-byte length), double quotes, keys reordered, no trailing comma, a
        // scalar shape, Python 2 long integers.
        let header = b"{\"shape\": (2L, 1L), \"fortran_order\": False, \"descr\": \"<f8\"}\n";
        let mut bytes = MAGIC.to_vec();
        bytes.extend([2, 0]);
        bytes.extend((header.len() as u32).to_le_bytes());
        bytes.extend(header);
        bytes.extend([0u8; 16]);
        let a = parse(&bytes).unwrap();
        assert_eq!(a.shape, vec![2, 1]);
        let scalar = parse(&npy("|u1", &[], &[9])).unwrap();
        assert!(scalar.shape.is_empty());
    }

    #[test]
    fn malformed_arrays_are_explained() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"PK\x03\x04".to_vec(), "not a .npy array"),
            (MAGIC.to_vec(), "ends inside the .npy header"),
            (
                [MAGIC, &[1, 0, 200, 0]].concat(),
                "ends inside the .npy header",
            ),
            ([MAGIC, &[9, 0, 0, 0]].concat(), "version 9.0"),
            (npy("|u1", &[2, 3], &[0; 5]), "truncated"),
            (npy("<f2", &[1], &[0; 2]), "'<f2' is not supported"),
            (npy(">f4", &[1], &[0; 4]), "big-endian"),
            (npy("|u1", &[usize::MAX, 3], &[]), "overflows"),
            (
                npy_with_header(
                    "{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }",
                    &[0; 4],
                ),
                "Fortran",
            ),
            (
                npy_with_header("{'descr': '<f4', 'shape': (1,), }", &[0; 4]),
                "must all be given",
            ),
            (
                npy_with_header(
                    "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}",
                    &[0; 4],
                ),
                "cannot read the .npy header",
            ),
            (
                npy_with_header(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}",
                    &[0; 4],
                ),
                "expected a dimension",
            ),
            (
                npy_with_header("{'descr': '<f4, 'fortran_order': False", &[]),
                "cannot read the .npy header",
            ),
            (
                npy_with_header("{'descr': 4}", &[]),
                "cannot read the .npy header",
            ),
            ([MAGIC, &[1, 0, 2, 0], &[0xff, 0xfe]].concat(), "not text"),
        ];
        for (bytes, expected) in cases {
            let e = parse(&bytes).unwrap_err();
            assert!(e.contains(expected), "{expected:?} not in {e:?}");
        }
    }
}
