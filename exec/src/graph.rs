//! Task graphs: tasks named by [`TaskId`], each a kernel name with encoded
//! arguments, dependencies, and a memory estimate (an upper bound the
//! planner computes). Graphs are validated before they run: ids unique,
//! dependencies present, no cycles.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Identifies a task within one graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskId(pub u64);

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "t{}", self.0)
    }
}

/// One task: what to run, on what, after what, within how much memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// The task's id.
    pub id: TaskId,
    /// Name of the registered kernel that runs it.
    pub kernel: String,
    /// The kernel's arguments, bincode-encoded.
    pub args: Vec<u8>,
    /// Tasks whose outputs this task takes as inputs, in order.
    pub deps: Vec<TaskId>,
    /// Upper bound of the memory the task needs, in bytes.
    pub memory_bytes: u64,
    /// A short human label (for progress and reports).
    pub label: String,
}

/// Encodes a value with the wire / argument encoding (bincode, standard config).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map_err(|e| Error::internal(format!("cannot encode task data: {e}")))
}

/// Decodes a value encoded by [`encode`]; the input must be consumed whole.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map_err(|e| Error::internal(format!("cannot decode task data: {e}")))?;
    if used != bytes.len() {
        return Err(Error::internal("cannot decode task data: trailing bytes"));
    }
    Ok(value)
}

/// A graph of tasks under construction or ready to run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Graph {
    tasks: Vec<TaskSpec>,
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a task running `kernel` on `args` after `deps`; returns its id.
    pub fn add<A: Serialize>(
        &mut self,
        kernel: &str,
        args: &A,
        deps: Vec<TaskId>,
        memory_bytes: u64,
        label: impl Into<String>,
    ) -> Result<TaskId> {
        let id = TaskId(self.tasks.len() as u64);
        self.tasks.push(TaskSpec {
            id,
            kernel: kernel.to_string(),
            args: encode(args)?,
            deps,
            memory_bytes,
            label: label.into(),
        });
        Ok(id)
    }

    /// Adds a fully formed task (its id must be new).
    pub fn push(&mut self, task: TaskSpec) {
        self.tasks.push(task);
    }

    /// The tasks, in insertion order.
    pub fn tasks(&self) -> &[TaskSpec] {
        &self.tasks
    }

    /// Number of tasks.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether the graph has no task.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Checks ids are unique, dependencies exist, and there is no cycle;
    /// returns the tasks' indices in a topological order.
    pub fn validate(&self) -> Result<Vec<usize>> {
        let mut index = HashMap::with_capacity(self.tasks.len());
        for (i, t) in self.tasks.iter().enumerate() {
            if index.insert(t.id, i).is_some() {
                return Err(Error::graph(format!("duplicate task id {}", t.id)));
            }
        }
        let mut indegree = vec![0usize; self.tasks.len()];
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); self.tasks.len()];
        for (i, t) in self.tasks.iter().enumerate() {
            for d in &t.deps {
                let &j = index.get(d).ok_or_else(|| {
                    Error::graph(format!("task {} depends on unknown task {d}", t.id))
                })?;
                indegree[i] += 1;
                dependents[j].push(i);
            }
        }
        let mut ready: Vec<usize> = (0..self.tasks.len())
            .filter(|&i| indegree[i] == 0)
            .collect();
        let mut order = Vec::with_capacity(self.tasks.len());
        while let Some(i) = ready.pop() {
            order.push(i);
            for &k in &dependents[i] {
                indegree[k] -= 1;
                if indegree[k] == 0 {
                    ready.push(k);
                }
            }
        }
        if order.len() != self.tasks.len() {
            return Err(Error::graph("dependency cycle"));
        }
        Ok(order)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_orders_and_rejects_bad_graphs() {
        let mut g = Graph::new();
        let a = g.add("k", &1u32, vec![], 10, "a").expect("add");
        let b = g.add("k", &2u32, vec![a], 10, "b").expect("add");
        let c = g.add("k", &3u32, vec![a, b], 10, "c").expect("add");
        let order = g.validate().expect("valid");
        let pos = |id: TaskId| {
            order
                .iter()
                .position(|&i| g.tasks()[i].id == id)
                .expect("present")
        };
        assert!(pos(a) < pos(b) && pos(b) < pos(c));

        let mut missing = g.clone();
        missing.push(TaskSpec {
            id: TaskId(99),
            kernel: "k".into(),
            args: vec![],
            deps: vec![TaskId(42)],
            memory_bytes: 0,
            label: String::new(),
        });
        assert!(missing.validate().is_err());

        let mut dup = g.clone();
        dup.push(TaskSpec {
            id: a,
            kernel: "k".into(),
            args: vec![],
            deps: vec![],
            memory_bytes: 0,
            label: String::new(),
        });
        assert!(dup.validate().is_err());

        let mut cyclic = Graph::new();
        cyclic.push(TaskSpec {
            id: TaskId(0),
            kernel: "k".into(),
            args: vec![],
            deps: vec![TaskId(1)],
            memory_bytes: 0,
            label: String::new(),
        });
        cyclic.push(TaskSpec {
            id: TaskId(1),
            kernel: "k".into(),
            args: vec![],
            deps: vec![TaskId(0)],
            memory_bytes: 0,
            label: String::new(),
        });
        assert!(cyclic.validate().is_err());
    }

    #[test]
    fn encode_decode_round_trip_and_reject_trailing_bytes() {
        let v = (7u64, "x".to_string(), vec![1i64, -2]);
        let bytes = encode(&v).expect("encode");
        assert_eq!(
            decode::<(u64, String, Vec<i64>)>(&bytes).expect("decode"),
            v
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode::<(u64, String, Vec<i64>)>(&longer).is_err());
    }
}
