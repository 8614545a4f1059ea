//! Group commit for accounting. Every reservation, settlement and refusal
//! goes through one writer task per process, which drains whatever is queued
//! and applies it in a single transaction, then answers each caller after
//! the commit. Callers still wait for durability, but a burst of calls shares
//! one disk sync instead of paying for one each. Each operation inside the
//! batch is itself an atomic conditional statement, so batching never lets a
//! pool be overspent, and two processes sharing PostgreSQL stay correct
//! because row locks order their batches.

use app::ssr::ledger::{Refusal, ReserveOutcome, ReserveRequest, Settlement};
use app::ssr::ledger_batch::{self, Op, OpResult};
use app::ssr::{db, now_ms};
use sea_orm::{DatabaseConnection, DbErr};
use tokio::sync::{mpsc, oneshot};

const MAX_BATCH: usize = 512;

#[derive(Debug, thiserror::Error)]
#[error("accounting is unavailable: {0}")]
pub struct AccountingError(pub String);

enum Job {
    Reserve(
        ReserveRequest,
        oneshot::Sender<Result<ReserveOutcome, AccountingError>>,
    ),
    Settle(
        Settlement,
        oneshot::Sender<Result<Option<i64>, AccountingError>>,
    ),
    Refuse(Refusal, oneshot::Sender<Result<(), AccountingError>>),
}

enum Done {
    Reserve(ReserveOutcome),
    Settle(Option<i64>),
    Refuse,
}

#[derive(Clone)]
pub struct Accountant {
    tx: mpsc::Sender<Job>,
}

impl Accountant {
    pub fn start(db: DatabaseConnection) -> Accountant {
        let (tx, rx) = mpsc::channel(8192);
        tokio::spawn(run(db, rx));
        Accountant { tx }
    }

    async fn submit<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, AccountingError>>) -> Job,
    ) -> Result<T, AccountingError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| AccountingError("the accounting writer stopped".into()))?;
        rx.await
            .map_err(|_| AccountingError("the accounting writer stopped".into()))?
    }

    pub async fn reserve(&self, req: ReserveRequest) -> Result<ReserveOutcome, AccountingError> {
        self.submit(|r| Job::Reserve(req, r)).await
    }

    pub async fn settle(&self, s: Settlement) -> Result<Option<i64>, AccountingError> {
        self.submit(|r| Job::Settle(s, r)).await
    }

    pub async fn refuse(&self, r: Refusal) -> Result<(), AccountingError> {
        self.submit(|reply| Job::Refuse(r, reply)).await
    }
}

async fn run(db: DatabaseConnection, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        match apply(&db, &jobs).await {
            Ok(done) => reply_all::<String>(jobs, done.into_iter().map(Ok).collect()),
            Err(batch_err) => {
                // One bad operation (or a deadlock with another instance)
                // must not fail its neighbours: retry each on its own.
                tracing::warn!(
                    "accounting batch of {} failed, retrying singly: {batch_err}",
                    jobs.len()
                );
                let mut results = Vec::with_capacity(jobs.len());
                for job in &jobs {
                    results.push(
                        apply(&db, std::slice::from_ref(job))
                            .await
                            .map(|mut d| d.remove(0))
                            .map_err(|e| e.to_string()),
                    );
                }
                reply_all(jobs, results);
            }
        }
    }
}

async fn apply(db: &DatabaseConnection, jobs: &[Job]) -> Result<Vec<Done>, DbErr> {
    let now = now_ms();
    let ops: Vec<Op> = jobs
        .iter()
        .map(|job| match job {
            Job::Reserve(req, _) => Op::Reserve(req),
            Job::Settle(s, _) => Op::Settle(s),
            Job::Refuse(r, _) => Op::Refuse(r),
        })
        .collect();
    let txn = db::begin_write(db).await?;
    let results = ledger_batch::apply(&txn, &ops, now).await?;
    txn.commit().await?;
    Ok(results
        .into_iter()
        .map(|r| match r {
            OpResult::Reserve(o) => Done::Reserve(o),
            OpResult::Settle(o) => Done::Settle(o),
            OpResult::Refuse => Done::Refuse,
        })
        .collect())
}

fn reply_all<E: ToString>(jobs: Vec<Job>, results: Vec<Result<Done, E>>) {
    for (job, result) in jobs.into_iter().zip(results) {
        let err = |e: E| AccountingError(e.to_string());
        match (job, result) {
            (Job::Reserve(_, tx), Ok(Done::Reserve(o))) => drop(tx.send(Ok(o))),
            (Job::Settle(_, tx), Ok(Done::Settle(o))) => drop(tx.send(Ok(o))),
            (Job::Refuse(_, tx), Ok(Done::Refuse)) => drop(tx.send(Ok(()))),
            (Job::Reserve(_, tx), Err(e)) => drop(tx.send(Err(err(e)))),
            (Job::Settle(_, tx), Err(e)) => drop(tx.send(Err(err(e)))),
            (Job::Refuse(_, tx), Err(e)) => drop(tx.send(Err(err(e)))),
            (Job::Reserve(_, tx), Ok(_)) => {
                drop(tx.send(Err(AccountingError("mismatched result".into()))))
            }
            (Job::Settle(_, tx), Ok(_)) => {
                drop(tx.send(Err(AccountingError("mismatched result".into()))))
            }
            (Job::Refuse(_, tx), Ok(_)) => {
                drop(tx.send(Err(AccountingError("mismatched result".into()))))
            }
        }
    }
}
