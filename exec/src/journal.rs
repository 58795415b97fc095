//! The journal of finished tasks: an append-only file of (task, output)
//! records, each with a checksum, so a run that died can be resumed doing
//! only what is unfinished. A torn last record (the process died while
//! writing it) is ignored: that task simply runs again.

use std::collections::{HashMap, HashSet};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::graph::{Graph, TaskId, TaskSpec};
use crate::kernel::CONST_KERNEL;

/// Largest output a journal record may carry (larger records end the
/// readable journal: the task reruns).
pub const MAX_RECORD_BYTES: usize = 64 << 20;

fn checksum(task: u64, bytes: &[u8]) -> u64 {
    // FNV-1a over the task id and the output.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in task.to_le_bytes().iter().chain(bytes) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Appends finished tasks to a journal file.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: BufWriter<std::fs::File>,
}

impl Journal {
    /// Opens `path` for appending (creating it).
    pub fn open(path: &Path) -> Result<Journal> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::path(path, format!("cannot open the journal: {e}")))?;
        Ok(Journal {
            path: path.to_path_buf(),
            file: BufWriter::new(file),
        })
    }

    /// Records that `task` finished with `output`.
    pub fn record(&mut self, task: TaskId, output: &[u8]) -> Result<()> {
        let len = u32::try_from(output.len())
            .ok()
            .filter(|&l| l as usize <= MAX_RECORD_BYTES);
        let Some(len) = len else {
            return Ok(()); // Too large to journal: the task reruns on resume.
        };
        let mut rec = Vec::with_capacity(20 + output.len());
        rec.extend_from_slice(&task.0.to_le_bytes());
        rec.extend_from_slice(&len.to_le_bytes());
        rec.extend_from_slice(output);
        rec.extend_from_slice(&checksum(task.0, output).to_le_bytes());
        self.file
            .write_all(&rec)
            .map_err(|e| Error::path(&self.path, format!("cannot write the journal: {e}")))
    }

    /// Makes recorded tasks durable.
    pub fn sync(&mut self) -> Result<()> {
        self.file
            .flush()
            .and_then(|()| self.file.get_ref().sync_data())
            .map_err(|e| Error::path(&self.path, format!("cannot write the journal: {e}")))
    }

    /// Reads the intact records of a journal (none if it does not exist).
    pub fn read(path: &Path) -> Result<HashMap<TaskId, Vec<u8>>> {
        let mut bytes = Vec::new();
        match std::fs::File::open(path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes)
                    .map_err(|e| Error::path(path, format!("cannot read the journal: {e}")))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
            Err(e) => return Err(Error::path(path, format!("cannot read the journal: {e}"))),
        }
        let mut out = HashMap::new();
        let mut at = 0usize;
        while bytes.len() - at >= 12 {
            let task = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
            let len =
                u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap_or_default()) as usize;
            if len > MAX_RECORD_BYTES || bytes.len() - at - 12 < len + 8 {
                break;
            }
            let output = &bytes[at + 12..at + 12 + len];
            let sum = u64::from_le_bytes(
                bytes[at + 12 + len..at + 20 + len]
                    .try_into()
                    .unwrap_or_default(),
            );
            if sum != checksum(task, output) {
                break;
            }
            out.insert(TaskId(task), output.to_vec());
            at += 20 + len;
        }
        Ok(out)
    }
}

/// The part of `graph` still to run given the outputs of finished tasks:
/// unfinished tasks as they are, finished tasks that an unfinished one
/// depends on as [`CONST_KERNEL`] tasks yielding their recorded output, and
/// nothing else.
pub fn remaining_graph(graph: &Graph, done: &HashMap<TaskId, Vec<u8>>) -> Graph {
    let needed: HashSet<TaskId> = graph
        .tasks()
        .iter()
        .filter(|t| !done.contains_key(&t.id))
        .flat_map(|t| t.deps.iter().copied())
        .collect();
    let mut out = Graph::new();
    for t in graph.tasks() {
        match done.get(&t.id) {
            None => out.push(t.clone()),
            Some(output) if needed.contains(&t.id) => out.push(TaskSpec {
                id: t.id,
                kernel: CONST_KERNEL.to_string(),
                args: output.clone(),
                deps: Vec::new(),
                memory_bytes: output.len() as u64,
                label: format!("{} (journaled)", t.label),
            }),
            Some(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_and_a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("journal");
        let mut j = Journal::open(&path).expect("open");
        j.record(TaskId(3), b"abc").expect("rec");
        j.record(TaskId(7), b"").expect("rec");
        j.sync().expect("sync");
        drop(j);
        let mut bytes = std::fs::read(&path).expect("read");
        let intact = bytes.len();
        bytes.extend_from_slice(&9u64.to_le_bytes());
        bytes.extend_from_slice(&100u32.to_le_bytes());
        bytes.extend_from_slice(b"torn");
        std::fs::write(&path, &bytes).expect("write");
        let read = Journal::read(&path).expect("read");
        assert_eq!(read.len(), 2);
        assert_eq!(read[&TaskId(3)], b"abc");
        // A flipped byte ends the readable part.
        bytes[intact - 1] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        let read = Journal::read(&path).expect("read");
        assert_eq!(read.len(), 1);
        assert!(
            Journal::read(&dir.path().join("none"))
                .expect("missing")
                .is_empty()
        );
    }

    #[test]
    fn remaining_graph_keeps_unfinished_work_and_needed_outputs() {
        let mut g = Graph::new();
        let a = g.add("k", &1u8, vec![], 1, "a").expect("add");
        let b = g.add("k", &2u8, vec![a], 1, "b").expect("add");
        let c = g.add("k", &3u8, vec![b], 1, "c").expect("add");
        let done: HashMap<TaskId, Vec<u8>> = [(a, vec![1]), (b, vec![2])].into_iter().collect();
        let r = remaining_graph(&g, &done);
        assert_eq!(r.len(), 2, "a is not needed any more");
        let bt = r.tasks().iter().find(|t| t.id == b).expect("b");
        assert_eq!(bt.kernel, CONST_KERNEL);
        assert_eq!(bt.args, vec![2]);
        assert!(bt.deps.is_empty());
        assert!(r.tasks().iter().any(|t| t.id == c && t.kernel == "k"));
        r.validate().expect("valid");
    }
}
