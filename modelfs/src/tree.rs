//! The inode tree of a view: directories synthesised from file paths,
//! inode numbers assigned in path order (stable for one view).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::Component;

use crate::FsFile;

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{path}: not a relative path of normal components")]
    BadPath { path: String },
    #[error("{path} is both a file and a directory in the model")]
    Conflict { path: String },
}

pub enum NodeKind {
    Dir { children: BTreeMap<OsString, u64> },
    File(FsFile),
}

pub struct Node {
    pub ino: u64,
    pub parent: u64,
    pub kind: NodeKind,
}

pub struct Tree {
    nodes: Vec<Node>,
    total: u64,
}

impl Tree {
    pub fn build(mut files: Vec<FsFile>) -> Result<Tree, TreeError> {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let mut nodes = vec![
            // Index 0 is unused so that index == inode number (1 is the root).
            Node {
                ino: 0,
                parent: 0,
                kind: NodeKind::Dir {
                    children: BTreeMap::new(),
                },
            },
            Node {
                ino: 1,
                parent: 1,
                kind: NodeKind::Dir {
                    children: BTreeMap::new(),
                },
            },
        ];
        let mut total = 0u64;
        for f in files {
            let shown = f.path.display().to_string();
            let parts: Vec<&OsStr> = f
                .path
                .components()
                .map(|c| match c {
                    Component::Normal(n) => Ok(n),
                    _ => Err(TreeError::BadPath {
                        path: shown.clone(),
                    }),
                })
                .collect::<Result<_, _>>()?;
            let Some((leaf, dirs)) = parts.split_last() else {
                return Err(TreeError::BadPath { path: shown });
            };
            let mut cur = 1u64;
            for d in dirs {
                let next = match &nodes[cur as usize].kind {
                    NodeKind::Dir { children } => children.get(*d).copied(),
                    NodeKind::File(_) => return Err(TreeError::Conflict { path: shown }),
                };
                cur = match next {
                    Some(n) if matches!(nodes[n as usize].kind, NodeKind::Dir { .. }) => n,
                    Some(_) => return Err(TreeError::Conflict { path: shown }),
                    None => {
                        let ino = nodes.len() as u64;
                        nodes.push(Node {
                            ino,
                            parent: cur,
                            kind: NodeKind::Dir {
                                children: BTreeMap::new(),
                            },
                        });
                        if let NodeKind::Dir { children } = &mut nodes[cur as usize].kind {
                            children.insert(d.to_os_string(), ino);
                        }
                        ino
                    }
                };
            }
            let ino = nodes.len() as u64;
            match &mut nodes[cur as usize].kind {
                NodeKind::Dir { children } => {
                    if children.contains_key(*leaf) {
                        return Err(TreeError::Conflict { path: shown });
                    }
                    children.insert(leaf.to_os_string(), ino);
                }
                NodeKind::File(_) => return Err(TreeError::Conflict { path: shown }),
            }
            total = total.saturating_add(f.size);
            nodes.push(Node {
                ino,
                parent: cur,
                kind: NodeKind::File(f),
            });
        }
        Ok(Tree { nodes, total })
    }

    pub fn get(&self, ino: u64) -> Option<&Node> {
        if ino == 0 {
            return None;
        }
        self.nodes.get(ino as usize)
    }

    pub fn node(&self, ino: u64) -> &Node {
        &self.nodes[ino as usize]
    }

    pub fn child(&self, parent: u64, name: &OsStr) -> Option<u64> {
        match &self.get(parent)?.kind {
            NodeKind::Dir { children } => children.get(name).copied(),
            NodeKind::File(_) => None,
        }
    }

    pub fn is_dir(&self, ino: u64) -> bool {
        self.get(ino)
            .is_some_and(|n| matches!(n.kind, NodeKind::Dir { .. }))
    }

    pub fn len(&self) -> usize {
        self.nodes.len() - 1
    }

    pub fn total_bytes(&self) -> u64 {
        self.total
    }
}
