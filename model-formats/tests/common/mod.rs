//! A minimal GGUF v3 writer for tests (F32 tensors and scalar/array metadata).
#![allow(dead_code)]

use std::path::Path;

pub enum V<'a> {
    U32(u32),
    F32(f32),
    Bool(bool),
    Str(&'a str),
    Strs(Vec<String>),
    I32s(Vec<i32>),
    F32s(Vec<f32>),
}

fn s(out: &mut Vec<u8>, x: &str) {
    out.extend((x.len() as u64).to_le_bytes());
    out.extend(x.as_bytes());
}

/// Tensors: (name, dims in GGUF order, f32 values).
pub fn write_gguf(path: &Path, kvs: &[(&str, V)], tensors: &[(&str, Vec<u64>, Vec<f32>)]) {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((kvs.len() as u64).to_le_bytes());
    for (k, v) in kvs {
        s(&mut out, k);
        match v {
            V::U32(x) => {
                out.extend(4u32.to_le_bytes());
                out.extend(x.to_le_bytes())
            }
            V::F32(x) => {
                out.extend(6u32.to_le_bytes());
                out.extend(x.to_le_bytes())
            }
            V::Bool(x) => {
                out.extend(7u32.to_le_bytes());
                out.push(*x as u8)
            }
            V::Str(x) => {
                out.extend(8u32.to_le_bytes());
                s(&mut out, x)
            }
            V::Strs(xs) => {
                out.extend(9u32.to_le_bytes());
                out.extend(8u32.to_le_bytes());
                out.extend((xs.len() as u64).to_le_bytes());
                xs.iter().for_each(|x| s(&mut out, x));
            }
            V::F32s(xs) => {
                out.extend(9u32.to_le_bytes());
                out.extend(6u32.to_le_bytes());
                out.extend((xs.len() as u64).to_le_bytes());
                xs.iter().for_each(|x| out.extend(x.to_le_bytes()));
            }
            V::I32s(xs) => {
                out.extend(9u32.to_le_bytes());
                out.extend(5u32.to_le_bytes());
                out.extend((xs.len() as u64).to_le_bytes());
                xs.iter().for_each(|x| out.extend(x.to_le_bytes()));
            }
        }
    }
    let mut data = Vec::new();
    for (name, dims, vals) in tensors {
        while data.len() % 32 != 0 {
            data.push(0);
        }
        s(&mut out, name);
        out.extend((dims.len() as u32).to_le_bytes());
        dims.iter().for_each(|d| out.extend(d.to_le_bytes()));
        out.extend(0u32.to_le_bytes());
        out.extend((data.len() as u64).to_le_bytes());
        vals.iter().for_each(|v| data.extend(v.to_le_bytes()));
    }
    while !out.len().is_multiple_of(32) {
        out.push(0);
    }
    out.extend(data);
    std::fs::write(path, out).unwrap();
}
