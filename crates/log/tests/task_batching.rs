//! The writer as a task batches what one runtime worker's turn submits: the commands of
//! every task the worker has ready before it runs out of them are decided, written and
//! answered as one batch, one segment `write` for them all (docs/benchmarks.md, "The
//! writer's batch").

use keyledger_log::storage::OsStorage;
use keyledger_log::{Durability, Log, LogConfig, WriterOptions};
use keyledger_verify::merkle::TreeHash;
use std::sync::atomic::Ordering;
use std::time::Duration;

mod support;

use support::{ORIGIN, Usages, signer};

/// 32 tasks of one worker each submit a command: without a yield before the writer
/// drains its queue, the writer ran as soon as the first of them waited for its answer
/// (a woken task runs next on its worker), and wrote 32 batches of one event.
#[test]
fn as_a_task_the_commands_of_one_workers_turn_are_one_batch() {
    // The worker's periodic maintenance (every `event_interval` tasks) also wakes a
    // yielded task; pushed out of the way, so that where it falls among the 32 cannot
    // split the batch.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .event_interval(u32::MAX)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        dir: dir.path().join("log"),
        storage: OsStorage::shared(),
        signer: signer(),
        origin: ORIGIN.into(),
        tree_hash: TreeHash::Rfc6962,
    };
    let writer = Log::open(config).unwrap().start(
        Usages,
        WriterOptions {
            run_on: Some(runtime.handle().clone()),
            // No fsync or checkpoint falls due meanwhile to wake the writer early.
            sync_window: Duration::from_secs(3600),
            checkpoint_every: Duration::from_secs(3600),
            ..Default::default()
        },
        None,
    );
    assert_eq!(writer.submit_blocking(0, Durability::Written).unwrap(), 0);
    let batches_before = writer.stats().batches.load(Ordering::SeqCst);

    let submitting = writer.clone();
    let mut seqs = runtime.block_on(async move {
        tokio::spawn(async move {
            let tasks: Vec<_> = (1..=32u64)
                .map(|tag| {
                    let writer = submitting.clone();
                    tokio::spawn(async move { writer.submit(tag, Durability::Written).await })
                })
                .collect();
            let mut seqs = Vec::new();
            for task in tasks {
                seqs.push(task.await.unwrap().unwrap());
            }
            seqs
        })
        .await
        .unwrap()
    });

    seqs.sort_unstable();
    assert_eq!(seqs, (1..=32).collect::<Vec<u64>>(), "every command answered once, with its own seq");
    let batches = writer.stats().batches.load(Ordering::SeqCst) - batches_before;
    assert_eq!(batches, 1, "the 32 commands of one turn were written in {batches} batches");
    writer.shutdown_blocking();
}
