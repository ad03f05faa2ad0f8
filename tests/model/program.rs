//! Programs: their steps, how they are drawn, and how they print.

use std::fmt;

use proptest::prelude::*;

use crate::world::{User, PATHS, PREFIXES, TAGS};

#[derive(Clone, Debug)]
pub enum Op {
    Get(&'static str, User),
    Head(&'static str, User),
    Put(&'static str, User),
    Delete(&'static str, User),
    /// The data changes behind the cache's back (a background job), as a
    /// write by this user on this path would change it, without a flush.
    Job(&'static str, User),
    FlushPrefix(&'static str),
    FlushTag(&'static str),
    /// The reviews origin answers 503 (`true`) or recovers.
    Outage(bool),
    /// From now on, a read takes this many milliseconds at the origin (on
    /// tokio's paused clock, which moves meanwhile; not on the manual
    /// clock of the overlapping runs, nor on `/items/{id}`).
    Slow(u64),
    /// Milliseconds.
    Advance(u64),
}

pub fn op() -> impl Strategy<Value = Op> {
    let user = || prop_oneof![Just(User::Anon), Just(User::Alice), Just(User::Bob)];
    let target = move || (prop::sample::select(&PATHS[..]), user());
    let step = prop_oneof![
        4 => (1u64..=16).prop_map(|k| k * 250),
        1 => Just(1u64),
        1 => Just(999u64),
    ];
    prop_oneof![
        8 => target().prop_map(|(p, u)| Op::Get(p, u)),
        3 => target().prop_map(|(p, u)| Op::Head(p, u)),
        2 => target().prop_map(|(p, u)| Op::Put(p, u)),
        1 => target().prop_map(|(p, u)| Op::Delete(p, u)),
        1 => target().prop_map(|(p, u)| Op::Job(p, u)),
        1 => prop::sample::select(&PREFIXES[..]).prop_map(Op::FlushPrefix),
        1 => prop::sample::select(&TAGS[..]).prop_map(Op::FlushTag),
        1 => any::<bool>().prop_map(Op::Outage),
        1 => prop_oneof![Just(0u64), Just(300), Just(1_500), Just(2_500)].prop_map(Op::Slow),
        4 => step.prop_map(Op::Advance),
    ]
}

pub fn max_ops() -> usize {
    std::env::var("MODEL_MAX_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

/// A program run one request at a time.
#[derive(Clone)]
pub struct Program(pub Vec<Op>);

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, op) in self.0.iter().enumerate() {
            writeln!(f, "  {i:>3}: {op:?}")?;
        }
        Ok(())
    }
}

/// How many times a handler yields before and after it touches the data.
pub type Yields = (u8, u8);

/// A program run in groups of up to `width` steps sent at once (a time
/// step runs alone, between groups); each request's handler yields to the
/// other tasks as many times as `yields` says for its step, before and
/// after it touches the data.
#[derive(Clone)]
pub struct Overlapping {
    pub ops: Vec<(Op, Yields)>,
    pub width: usize,
}

impl Overlapping {
    /// The groups, each a list of (step, op); time steps alone.
    pub fn groups(&self) -> Vec<Vec<(usize, Op, Yields)>> {
        let mut groups = Vec::new();
        let mut group = Vec::new();
        for (i, (op, yields)) in self.ops.iter().enumerate() {
            if matches!(op, Op::Advance(_)) {
                if !group.is_empty() {
                    groups.push(std::mem::take(&mut group));
                }
                groups.push(vec![(i, op.clone(), (0, 0))]);
                continue;
            }
            group.push((i, op.clone(), *yields));
            if group.len() == self.width {
                groups.push(std::mem::take(&mut group));
            }
        }
        if !group.is_empty() {
            groups.push(group);
        }
        groups
    }
}

impl fmt::Debug for Overlapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  (groups of up to {} at once)", self.width)?;
        for (g, group) in self.groups().iter().enumerate() {
            for (n, (i, op, yields)) in group.iter().enumerate() {
                let mark = if n == 0 {
                    format!("g{g}")
                } else {
                    String::new()
                };
                let yields = match op {
                    Op::Get(..) | Op::Head(..) | Op::Put(..) | Op::Delete(..) => {
                        format!(" (yields {}, {})", yields.0, yields.1)
                    }
                    _ => String::new(),
                };
                writeln!(f, "  {mark:>4} {i:>3}: {op:?}{yields}")?;
            }
        }
        Ok(())
    }
}
