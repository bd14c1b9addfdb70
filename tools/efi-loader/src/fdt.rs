//! The device tree blob handed to the kernel: checked, and with its `memory` nodes removed
//! as the protocol says ("If the DTB contained `memory@...` nodes, they will get removed";
//! the memory map is the one source of truth about RAM).
//!
//! Removal overwrites the nodes with `FDT_NOP` tokens, which every device tree reader
//! skips, so no offset or size in the blob changes.
//!
//! The blob is checked, and read back in the tests, with the `fdt` crate (the reader the
//! kernel uses too). The token walk that finds the byte ranges of the memory nodes stays
//! written by hand: the crate only reads a tree, and exposes neither the structure block's
//! offsets nor a way to change it. [`total_size`] reads the header by hand too, because
//! it runs on the first bytes of a firmware blob before its size (and so the slice the
//! crate needs) is known.

const MAGIC: u32 = 0xd00d_feed;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROPERTY: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;

/// Why a blob was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdtError {
    BadMagic,
    Truncated,
    BadToken { offset: usize },
}

impl core::fmt::Display for FdtError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FdtError::BadMagic => f.write_str("not a flattened device tree (bad magic)"),
            FdtError::Truncated => f.write_str("device tree is truncated"),
            FdtError::BadToken { offset } => write!(
                f,
                "device tree has a bad token at structure offset {offset:#x}"
            ),
        }
    }
}

fn be32(blob: &[u8], at: usize) -> Result<u32, FdtError> {
    let bytes = blob.get(at..at + 4).ok_or(FdtError::Truncated)?;
    Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// The blob's `totalsize`, after checking the magic. `header` needs 8 bytes.
pub fn total_size(header: &[u8]) -> Result<usize, FdtError> {
    if be32(header, 0)? != MAGIC {
        return Err(FdtError::BadMagic);
    }
    Ok(be32(header, 4)? as usize)
}

/// Overwrite every `memory` / `memory@…` child of the root node with NOPs.
/// Returns how many nodes were removed.
pub fn remove_memory_nodes(blob: &mut [u8]) -> Result<usize, FdtError> {
    let size = match fdt::Fdt::new(blob) {
        Ok(tree) => tree.total_size(),
        Err(fdt::FdtError::BadMagic) => return Err(FdtError::BadMagic),
        Err(_) => return Err(FdtError::Truncated),
    };
    if size < 40 {
        return Err(FdtError::Truncated);
    }
    let blob = &mut blob[..size];
    let struct_start = be32(blob, 8)? as usize;
    let struct_size = be32(blob, 36)? as usize;
    let struct_end = struct_start
        .checked_add(struct_size)
        .filter(|&end| end <= size)
        .ok_or(FdtError::Truncated)?;
    let mut at = struct_start;
    let mut depth = 0usize;
    let mut removing: Option<(usize, usize)> = None; // (start offset, depth of the node)
    let mut removed = 0;
    while at < struct_end {
        let token_at = at;
        let token = be32(blob, at)?;
        at += 4;
        match token {
            BEGIN_NODE => {
                let name_end = blob[at..struct_end]
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or(FdtError::Truncated)?
                    + at;
                let name = &blob[at..name_end];
                at = (name_end + 1).next_multiple_of(4);
                depth += 1;
                if removing.is_none()
                    && depth == 2
                    && (name == b"memory" || name.starts_with(b"memory@"))
                {
                    removing = Some((token_at, depth));
                }
            }
            END_NODE => {
                if depth == 0 {
                    return Err(FdtError::BadToken {
                        offset: token_at - struct_start,
                    });
                }
                if let Some((start, node_depth)) = removing
                    && node_depth == depth
                {
                    for word in (start..at).step_by(4) {
                        blob[word..word + 4].copy_from_slice(&NOP.to_be_bytes());
                    }
                    removing = None;
                    removed += 1;
                }
                depth -= 1;
            }
            PROPERTY => {
                let length = be32(blob, at)? as usize;
                at = (at + 8)
                    .checked_add(length)
                    .ok_or(FdtError::Truncated)?
                    .next_multiple_of(4);
            }
            NOP => {}
            END => return Ok(removed),
            _ => {
                return Err(FdtError::BadToken {
                    offset: token_at - struct_start,
                });
            }
        }
    }
    Err(FdtError::Truncated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn token(out: &mut Vec<u8>, value: u32) {
        out.extend_from_slice(&value.to_be_bytes());
    }

    fn node(out: &mut Vec<u8>, name: &str) {
        token(out, BEGIN_NODE);
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }

    fn property(out: &mut Vec<u8>, name_offset: u32, value: &[u8]) {
        token(out, PROPERTY);
        token(out, value.len() as u32);
        token(out, name_offset);
        out.extend_from_slice(value);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }

    /// A tree: / { memory@40000000 { reg }, uart@9000000 { reg; memory { } }, memory { } }
    fn sample() -> Vec<u8> {
        let mut structure = Vec::new();
        node(&mut structure, "");
        node(&mut structure, "memory@40000000");
        property(
            &mut structure,
            0,
            &[0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0],
        );
        token(&mut structure, END_NODE);
        node(&mut structure, "uart@9000000");
        property(&mut structure, 0, &[1, 2, 3]);
        node(&mut structure, "memory");
        token(&mut structure, END_NODE);
        token(&mut structure, END_NODE);
        node(&mut structure, "memory");
        token(&mut structure, END_NODE);
        token(&mut structure, END_NODE);
        token(&mut structure, END);
        let strings = b"reg\0";
        let mut blob = Vec::new();
        let header = 40u32;
        let reserve_map = header;
        let structure_at = reserve_map + 16;
        let strings_at = structure_at + structure.len() as u32;
        let total = strings_at + strings.len() as u32;
        for value in [
            MAGIC,
            total,
            structure_at,
            strings_at,
            reserve_map,
            17,
            16,
            0,
            strings.len() as u32,
            structure.len() as u32,
        ] {
            token(&mut blob, value);
        }
        blob.extend_from_slice(&[0; 16]);
        blob.extend_from_slice(&structure);
        blob.extend_from_slice(strings);
        blob
    }

    fn node_names(blob: &[u8]) -> Vec<(usize, Vec<u8>)> {
        let start = be32(blob, 8).unwrap() as usize;
        let mut at = start;
        let mut depth = 0;
        let mut names = Vec::new();
        loop {
            let token = be32(blob, at).unwrap();
            at += 4;
            match token {
                BEGIN_NODE => {
                    let end = blob[at..].iter().position(|&b| b == 0).unwrap() + at;
                    depth += 1;
                    names.push((depth, blob[at..end].to_vec()));
                    at = (end + 1).next_multiple_of(4);
                }
                END_NODE => depth -= 1,
                PROPERTY => at = (at + 8 + be32(blob, at).unwrap() as usize).next_multiple_of(4),
                NOP => {}
                _ => return names,
            }
        }
    }

    #[test]
    fn removes_top_level_memory_nodes_only() {
        let mut blob = sample();
        let original_len = blob.len();
        assert_eq!(total_size(&blob).unwrap(), original_len);
        assert_eq!(remove_memory_nodes(&mut blob).unwrap(), 2);
        assert_eq!(blob.len(), original_len);
        let tree = fdt::Fdt::new(&blob).unwrap();
        let read_back: Vec<&str> = tree.all_nodes().map(|node| node.name).collect();
        assert_eq!(read_back, ["/", "uart@9000000", "memory"]);
        assert!(tree.find_node("/memory@40000000").is_none());
        let names = node_names(&blob);
        assert_eq!(
            names,
            [
                (1, b"".to_vec()),
                (1 + 1, b"uart@9000000".to_vec()),
                (3, b"memory".to_vec())
            ]
        );
        // Idempotent.
        assert_eq!(remove_memory_nodes(&mut blob).unwrap(), 0);
    }

    #[test]
    fn refuses_broken_blobs() {
        let mut blob = sample();
        blob[0] = 0;
        assert_eq!(remove_memory_nodes(&mut blob), Err(FdtError::BadMagic));
        let mut blob = sample();
        let len = blob.len();
        blob.truncate(len - 8);
        assert_eq!(remove_memory_nodes(&mut blob), Err(FdtError::Truncated));
        let mut blob = sample();
        let structure = be32(&blob, 8).unwrap() as usize;
        blob[structure..structure + 4].copy_from_slice(&77u32.to_be_bytes());
        assert_eq!(
            remove_memory_nodes(&mut blob),
            Err(FdtError::BadToken { offset: 0 })
        );
    }
}
