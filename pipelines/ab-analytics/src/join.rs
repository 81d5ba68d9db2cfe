//! One streaming pass: `assignments` merge-joined with `user_metrics` on (experiment, user),
//! folded into per-variant sufficient statistics as the rows go by.
//!
//! Both inputs must arrive sorted by (experiment_id, user_id). Upstream writes them that way, so
//! the first attempt reads the files as they are and checks the order on the fly; if a key ever
//! goes backwards the pass stops with [`Error::NotSorted`] and the caller reruns it on inputs
//! sorted by the engine (which spills within the memory budget). Either way memory holds two
//! batches and a few accumulators per variant, whatever the number of users.
//!
//! What the join decides, row by row:
//! * an assignment counts towards its variant's `assigned` (the sample-ratio check), with or
//!   without metrics; one without a usable metrics row counts as `missing_metrics`;
//! * a metrics row without an assignment, a second assignment or metrics row for the same user,
//!   a variant the experiment's plan does not list, a null key or an unusable value (null,
//!   negative, not finite) is rejected with its reason: never silently dropped.

use std::collections::{BTreeMap, HashMap};

use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use streampulse_core::rejects::{Reject, RejectSink};

use crate::analysis::{METRICS, VariantStats};
use crate::columns::{AssignmentRows, MetricRows};
use crate::error::{Error, Result};
use crate::input::VariantPlan;
use crate::stats::Moments;
use crate::winsor::Caps;

/// Rows summed in plain f64 before they are added to the running totals: a two-level sum keeps
/// the rounding error near that of NumPy's pairwise sums on days of tens of millions of users.
const CHUNK_ROWS: u64 = 4096;

/// One variant's running statistics.
#[derive(Debug, Clone)]
pub struct VariantAcc {
    pub plan: VariantPlan,
    pub assigned: u64,
    pub missing_metrics: u64,
    totals: [Moments; METRICS.len()],
    chunk: [Moments; METRICS.len()],
}

impl VariantAcc {
    fn new(plan: VariantPlan) -> Self {
        VariantAcc {
            plan,
            assigned: 0,
            missing_metrics: 0,
            totals: Default::default(),
            chunk: Default::default(),
        }
    }

    #[inline]
    fn push(&mut self, v: [f64; 5]) {
        let [minutes, sessions, converted, retained, pre] = v;
        self.chunk[0].push(minutes, pre);
        self.chunk[1].push(sessions, 0.0);
        self.chunk[2].push(converted, 0.0);
        self.chunk[3].push(retained, 0.0);
        if self.chunk[0].n == CHUNK_ROWS {
            self.flush();
        }
    }

    fn flush(&mut self) {
        for (total, chunk) in self.totals.iter_mut().zip(self.chunk.iter_mut()) {
            total.merge(chunk);
            *chunk = Moments::default();
        }
    }

    /// The variant's statistics for [`crate::analysis::analyse`].
    pub fn stats(&self) -> VariantStats {
        let mut done = self.clone();
        done.flush();
        VariantStats {
            name: done.plan.name,
            weight: done.plan.weight,
            is_control: done.plan.is_control,
            assigned: done.assigned,
            metrics: done.totals,
        }
    }
}

/// One experiment's accumulators.
#[derive(Debug, Clone)]
pub struct ExperimentAcc {
    pub id: String,
    /// Whether the variants come from the `experiments` table (else: as seen, equal weights).
    pub planned: bool,
    pub caps: Caps,
    pub variants: Vec<VariantAcc>,
}

/// What the pass saw.
#[derive(Debug, Default)]
pub struct JoinOutcome {
    pub experiments: Vec<ExperimentAcc>,
    pub assignment_rows: u64,
    pub metric_rows: u64,
}

/// A sorted input being read: the current batch and the position in it.
struct Cursor<R> {
    stream: SendableRecordBatchStream,
    rows: Option<R>,
    row: usize,
    len: usize,
    /// Rows of the input before the current batch, to name a row in rejects.
    before: u64,
    done: bool,
    order: Order,
}

/// The last key taken from one input, to check the order and find duplicates.
struct Order {
    label: String,
    last_experiment: String,
    last_user: Option<i64>,
}

enum Peek<'a> {
    End,
    NullKey,
    Key(&'a str, i64),
}

/// What taking a row found, given the order so far.
enum Taken {
    Fresh,
    Duplicate,
}

trait Rows: Sized {
    fn new(batch: &arrow::record_batch::RecordBatch) -> Result<Self>;
    fn key(&self, i: usize) -> Option<(&str, i64)>;
    fn raw(&self, i: usize) -> String;
}

impl Rows for AssignmentRows {
    fn new(batch: &arrow::record_batch::RecordBatch) -> Result<Self> {
        AssignmentRows::new(batch)
    }
    fn key(&self, i: usize) -> Option<(&str, i64)> {
        AssignmentRows::key(self, i)
    }
    fn raw(&self, i: usize) -> String {
        AssignmentRows::raw(self, i)
    }
}

impl Rows for MetricRows {
    fn new(batch: &arrow::record_batch::RecordBatch) -> Result<Self> {
        MetricRows::new(batch)
    }
    fn key(&self, i: usize) -> Option<(&str, i64)> {
        MetricRows::key(self, i)
    }
    fn raw(&self, i: usize) -> String {
        MetricRows::raw(self, i)
    }
}

impl<R: Rows> Cursor<R> {
    fn new(stream: SendableRecordBatchStream, label: String) -> Self {
        Cursor {
            stream,
            rows: None,
            row: 0,
            len: 0,
            before: 0,
            done: false,
            order: Order {
                label,
                last_experiment: String::new(),
                last_user: None,
            },
        }
    }

    /// Makes sure a row is available unless the input is exhausted.
    async fn fill(&mut self) -> Result<()> {
        while self.row == self.len && !self.done {
            self.before += self.len as u64;
            match self.stream.next().await.transpose()? {
                Some(batch) => {
                    self.rows = Some(R::new(&batch).map_err(|e| match e {
                        Error::Inconsistent(msg) => {
                            Error::Inconsistent(format!("{}: {msg}", self.order.label))
                        }
                        other => other,
                    })?);
                    self.len = batch.num_rows();
                    self.row = 0;
                }
                None => {
                    self.rows = None;
                    self.len = 0;
                    self.row = 0;
                    self.done = true;
                }
            }
        }
        Ok(())
    }

    #[inline]
    fn peek(&self) -> Peek<'_> {
        match &self.rows {
            Some(rows) if self.row < self.len => match rows.key(self.row) {
                Some((e, u)) => Peek::Key(e, u),
                None => Peek::NullKey,
            },
            _ => Peek::End,
        }
    }

    /// The current row's index in the whole input.
    fn line(&self) -> u64 {
        self.before + self.row as u64
    }

    /// Rejects the current row for its null key and moves past it.
    fn reject_null_key(&mut self, join: &mut Join<'_>) -> Result<()> {
        let raw = self
            .rows
            .as_ref()
            .map(|r| r.raw(self.row))
            .unwrap_or_default();
        let line = self.line();
        join.reject(
            &self.order.label,
            line,
            Some("experiment_id"),
            "null experiment_id or user_id".into(),
            raw,
        )?;
        self.row += 1;
        Ok(())
    }
}

impl Order {
    /// Records a key as taken, checking that keys never go backwards.
    #[inline]
    fn take(&mut self, experiment: &str, user: i64, line: u64) -> Result<Taken> {
        let taken = if experiment == self.last_experiment {
            match self.last_user {
                Some(last) if user < last => return Err(self.not_sorted(line)),
                Some(last) if user == last => Taken::Duplicate,
                _ => Taken::Fresh,
            }
        } else if self.last_user.is_some() && experiment < self.last_experiment.as_str() {
            return Err(self.not_sorted(line));
        } else {
            self.last_experiment.clear();
            self.last_experiment.push_str(experiment);
            Taken::Fresh
        };
        self.last_user = Some(user);
        Ok(taken)
    }

    fn not_sorted(&self, line: u64) -> Error {
        Error::NotSorted {
            input: self.label.clone(),
            key: "(experiment_id, user_id)",
            line,
        }
    }
}

/// The accumulators and the rejects of one pass.
struct Join<'a> {
    plans: &'a BTreeMap<String, Vec<VariantPlan>>,
    caps: &'a HashMap<String, Caps>,
    experiments: Vec<ExperimentAcc>,
    index: HashMap<String, usize>,
    current: Option<usize>,
    rejects: &'a mut RejectSink,
}

impl Join<'_> {
    fn experiment(&mut self, id: &str) -> usize {
        if let Some(c) = self.current
            && self.experiments[c].id == id
        {
            return c;
        }
        let e = match self.index.get(id) {
            Some(&e) => e,
            None => {
                let plan = self.plans.get(id);
                self.experiments.push(ExperimentAcc {
                    id: id.to_string(),
                    planned: plan.is_some(),
                    caps: self.caps.get(id).copied().unwrap_or_default(),
                    variants: plan
                        .map(|p| p.iter().cloned().map(VariantAcc::new).collect())
                        .unwrap_or_default(),
                });
                self.index
                    .insert(id.to_string(), self.experiments.len() - 1);
                self.experiments.len() - 1
            }
        };
        self.current = Some(e);
        e
    }

    /// The variant's index, created on first sight for an unplanned experiment; `None` when the
    /// plan does not list it.
    #[inline]
    fn variant(&mut self, e: usize, name: &str) -> Option<usize> {
        let exp = &mut self.experiments[e];
        if let Some(v) = exp.variants.iter().position(|v| v.plan.name == name) {
            return Some(v);
        }
        if exp.planned {
            return None;
        }
        exp.variants.push(VariantAcc::new(VariantPlan {
            name: name.to_string(),
            weight: 1.0,
            is_control: name == "control",
        }));
        Some(exp.variants.len() - 1)
    }

    fn reject(
        &mut self,
        file: &str,
        line: u64,
        column: Option<&str>,
        reason: String,
        raw: String,
    ) -> Result<()> {
        self.rejects.push(&Reject {
            file: file.to_string(),
            line,
            column: column.map(str::to_string),
            reason,
            raw,
        })?;
        Ok(())
    }
}

/// Runs the pass over two streams sorted by (experiment_id, user_id).
pub async fn run(
    assignments: (SendableRecordBatchStream, String),
    metrics: (SendableRecordBatchStream, String),
    plans: &BTreeMap<String, Vec<VariantPlan>>,
    caps: &HashMap<String, Caps>,
    rejects: &mut RejectSink,
) -> Result<JoinOutcome> {
    let mut a: Cursor<AssignmentRows> = Cursor::new(assignments.0, assignments.1);
    let mut m: Cursor<MetricRows> = Cursor::new(metrics.0, metrics.1);
    let mut join = Join {
        plans,
        caps,
        experiments: Vec::new(),
        index: HashMap::new(),
        current: None,
        rejects,
    };
    loop {
        a.fill().await?;
        m.fill().await?;
        // Which side(s) the smaller key is on; rows with a null key are rejected first.
        let step = match (a.peek(), m.peek()) {
            (Peek::End, Peek::End) => break,
            (Peek::NullKey, _) => {
                a.reject_null_key(&mut join)?;
                continue;
            }
            (_, Peek::NullKey) => {
                m.reject_null_key(&mut join)?;
                continue;
            }
            (Peek::Key(..), Peek::End) => std::cmp::Ordering::Less,
            (Peek::End, Peek::Key(..)) => std::cmp::Ordering::Greater,
            (Peek::Key(ea, ua), Peek::Key(em, um)) => ea.cmp(em).then(ua.cmp(&um)),
        };
        if step.is_gt() {
            take_metrics(&mut m, &mut join, None)?;
            continue;
        }
        let (i, line) = (a.row, a.line());
        let Some(rows) = a.rows.as_ref() else { break };
        let Some((experiment, user)) = rows.key(i) else {
            break;
        };
        let taken = a.order.take(experiment, user, line)?;
        a.row += 1;
        // A metrics row with the same key is taken below whatever happens to this one.
        let paired = step.is_eq();
        if let Taken::Duplicate = taken {
            join.reject(
                &a.order.label,
                line,
                Some("user_id"),
                format!("user {user} is assigned twice in experiment {experiment}"),
                rows.raw(i),
            )?;
            continue; // a paired metrics row stays: the next step finds it a duplicate
        }
        let e = join.experiment(experiment);
        let variant = rows.variant.get(i);
        let Some(v) = variant.and_then(|name| join.variant(e, name)) else {
            let reason = match variant {
                Some(name) => {
                    format!("variant {name:?} is not in the plan of experiment {experiment}")
                }
                None => "null variant".into(),
            };
            join.reject(&a.order.label, line, Some("variant"), reason, rows.raw(i))?;
            if paired {
                take_metrics(&mut m, &mut join, None)?;
            }
            continue;
        };
        join.experiments[e].variants[v].assigned += 1;
        let used = paired && take_metrics(&mut m, &mut join, Some((e, v)))?;
        if !used {
            join.experiments[e].variants[v].missing_metrics += 1;
        }
    }
    Ok(JoinOutcome {
        experiments: join.experiments,
        assignment_rows: a.before,
        metric_rows: m.before,
    })
}

/// Takes the current metrics row: folded into `target` when it is assigned and usable, else
/// rejected with the reason. Returns whether the row was used.
fn take_metrics(
    m: &mut Cursor<MetricRows>,
    join: &mut Join<'_>,
    target: Option<(usize, usize)>,
) -> Result<bool> {
    let (i, line) = (m.row, m.line());
    let Some(rows) = m.rows.as_ref() else {
        return Ok(false);
    };
    let Some((experiment, user)) = rows.key(i) else {
        return Ok(false);
    };
    let taken = m.order.take(experiment, user, line)?;
    m.row += 1;
    let (column, reason) = match (taken, target) {
        (Taken::Duplicate, _) => (
            "user_id",
            format!("a second metrics row for user {user} in experiment {experiment}"),
        ),
        (Taken::Fresh, None) => (
            "user_id",
            format!("user {user} has metrics but no valid assignment in experiment {experiment}"),
        ),
        (Taken::Fresh, Some((e, v))) => match rows.values(i) {
            Ok(values) => {
                let exp = &mut join.experiments[e];
                let capped = exp.caps.apply(values);
                exp.variants[v].push(capped);
                return Ok(true);
            }
            Err((column, why)) => (column, format!("{column} is {why}")),
        },
    };
    join.reject(&m.order.label, line, Some(column), reason, rows.raw(i))?;
    Ok(false)
}
