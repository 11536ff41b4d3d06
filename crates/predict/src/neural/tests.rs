//! Tests of the learned models: the serving kernel equals the candle graph, training learns a
//! learnable pattern and is reproducible, models round-trip through disk, and bad model
//! directories give clear errors.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use prewarm_core::HistoryRecord;

use super::features::{Vocab, VocabLimits, encode};
use super::kernel::Kernel;
use super::net::{Arch, Batch, Dims, Net};
use super::train::{TrainOptions, init_weights, train};
use super::*;
use crate::eval::evaluate;
use crate::predictor::test_record;

/// Keys that each cycle through their own loop of resources: learnable from the key's own
/// past, invisible to global popularity.
fn cyclic(n: usize) -> Vec<HistoryRecord> {
    let loops = [
        ["a", "b", "c"],
        ["d", "e", "f"],
        ["a", "e", "c"],
        ["f", "b", "d"],
    ];
    (0..n)
        .map(|i| {
            let key = i % 12;
            let step = i / 12;
            let res = loops[key % loops.len()][step % 3];
            let mut r = test_record(i as f64, &format!("k{key}"), &format!("r/{res}"));
            r.duration_s = 0.01 * (1 + key % 3) as f64;
            r
        })
        .collect()
}

fn small(arch: Arch) -> TrainOptions {
    let mut o = TrainOptions::new(arch);
    o.max_epochs = 30;
    o.patience = 30;
    // Short windows and small batches: enough optimiser steps on a tiny history.
    o.seq_len = 8;
    o.batch = 4;
    o.lr = 1e-2;
    o.time_budget = None;
    o
}

const SMALL_GRU: Arch = Arch::Gru {
    embed: 16,
    hidden: 24,
};
const SMALL_TF: Arch = Arch::Transformer {
    dim: 16,
    layers: 2,
    heads: 2,
    window: 4,
};

/// Kernel outputs equal the candle graph's, step by step, for a random model.
fn kernel_matches_graph(arch: Arch) {
    let recs = cyclic(240);
    let vocab = Vocab::build(&recs, VocabLimits::default());
    let dims = Dims {
        resources: vocab.resource_tokens(),
        types: vocab.type_tokens(),
        keys: vocab.key_tokens(),
    };
    let vm = VarMap::new();
    let net = Net::new(
        arch,
        dims,
        VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
    )
    .unwrap();
    init_weights(&vm, 7).unwrap();
    let tensors: HashMap<String, Tensor> = vm
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().copy().unwrap()))
        .collect();
    let mut kernel = Kernel::new(arch, dims, &tensors).unwrap();
    kernel.set_precision(super::kernel::Precision::F32);
    let enc = encode(&vocab, &recs, 60.0);
    // One key's first 10 steps (longer than the transformer's window of 4).
    let seq: Vec<usize> = enc.sequences[0].iter().take(10).copied().collect();
    let col = |f: fn(&super::features::Step) -> u32| {
        Tensor::from_vec(
            seq.iter().map(|&i| f(&enc.steps[i])).collect::<Vec<u32>>(),
            (1, seq.len()),
            &Device::Cpu,
        )
        .unwrap()
    };
    let batch = Batch {
        kind: col(|s| s.kind),
        key: col(|s| s.key),
        gap: col(|s| s.gap),
        prev_read: col(|s| s.prev_read),
        prev_write: col(|s| s.prev_write),
        prev_duration: col(|s| s.prev_duration),
        hints: Tensor::from_vec(
            seq.iter()
                .flat_map(|&i| enc.steps[i].hints)
                .collect::<Vec<u32>>(),
            (1, seq.len(), super::features::HINTS),
            &Device::Cpu,
        )
        .unwrap(),
        confidence: col(|s| s.confidence),
    };
    let graph: Vec<Vec<f32>> = net
        .forward(&batch)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2()
        .unwrap();
    let run = |kernel: &Kernel, tolerance: f32| {
        let mut state = kernel.zero_state();
        let mut out = Vec::new();
        for (t, &i) in seq.iter().enumerate() {
            state = kernel.step(&state, &enc.steps[i]);
            kernel.logits(&state, &enc.steps[i], &mut out);
            let worst = out
                .iter()
                .zip(&graph[t])
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                worst < tolerance,
                "{arch:?} {:?} step {t}: max difference {worst}",
                kernel.precision()
            );
        }
    };
    run(&kernel, 1e-4);
    // Half-precision weights (where the CPU has F16C): close, not equal.
    kernel.set_precision(super::kernel::Precision::F16);
    run(&kernel, 2e-2);
}

#[test]
fn gru_kernel_matches_candle() {
    kernel_matches_graph(SMALL_GRU);
}

#[test]
fn transformer_kernel_matches_candle_beyond_its_window() {
    kernel_matches_graph(SMALL_TF);
}

/// Global popularity cannot exceed about a third here; the model must use each key's past.
fn learns(arch: Arch, lr: f64) {
    let recs = cyclic(1200);
    let train_part = &recs[..900];
    let mut o = small(arch);
    o.lr = lr;
    let model = train(train_part, &o, &mut |_| {}).unwrap();
    let summary = model.config.training.clone();
    assert!(summary.validation_records > 0);
    assert!(summary.validation_top1 > 0.75, "{summary:?}");
    let mut p = Learned::new(model, 1000);
    let row = evaluate(&mut p, &recs, 0.75, 10.0);
    assert!(row.top1 > 0.75, "{arch:?}: {row:?}");
    let mut freq = crate::baselines::Frequency::new(3600.0);
    let base = evaluate(&mut freq, &recs, 0.75, 10.0);
    assert!(row.log_loss < base.log_loss - 0.3, "{row:?} vs {base:?}");
}

#[test]
fn gru_learns_per_key_sequences() {
    learns(SMALL_GRU, 1e-2);
}

#[test]
fn transformer_learns_per_key_sequences() {
    learns(SMALL_TF, 3e-2);
}

#[test]
fn training_is_reproducible_and_round_trips_through_disk() {
    let recs = cyclic(300);
    let mut o = small(SMALL_GRU);
    o.max_epochs = 3;
    let mut a = train(&recs, &o, &mut |_| {}).unwrap();
    let b = train(&recs, &o, &mut |_| {}).unwrap();
    for (k, t) in &a.tensors {
        let diff: f32 = (t - &b.tensors[k])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(diff, 0.0, "{k} differs between two runs with one seed");
    }
    let dir = tempfile::tempdir().unwrap();
    a.save(dir.path()).unwrap();
    let mut loaded = Learned::load(dir.path(), 100).unwrap();
    let mut orig = Learned::new(a, 100);
    for r in &recs[..50] {
        let ctx = crate::Context {
            ts: r.ts,
            event: &r.event,
        };
        assert_eq!(orig.predict(&ctx, 3), loaded.predict(&ctx, 3));
        orig.observe(r);
        loaded.observe(r);
    }
    // Reload in place keeps serving, with key states rebuilt from recent executions.
    let r = &recs[50];
    let ctx = crate::Context {
        ts: r.ts,
        event: &r.event,
    };
    let before = loaded.predict(&ctx, 3);
    loaded.reload(dir.path()).unwrap();
    // The replay sees the online model's hints as they are now, not as they were, so the
    // probabilities may move a little; the ranking must not.
    let close = |a: &[crate::Prediction], b: &[crate::Prediction]| {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| {
                x.resource == y.resource && (x.probability - y.probability).abs() < 0.02
            })
    };
    let after = loaded.predict(&ctx, 3);
    assert!(close(&after, &before), "{after:?} vs {before:?}");
    // A failed reload leaves the model serving.
    assert!(loaded.reload(&dir.path().join("nope")).is_err());
    assert_eq!(loaded.predict(&ctx, 3), after);
}

#[test]
fn unseen_keys_types_and_resources_never_break_the_model() {
    let recs = cyclic(200);
    let mut o = small(SMALL_GRU);
    o.max_epochs = 2;
    let model = train(&recs, &o, &mut |_| {}).unwrap();
    let mut p = Learned::new(model, 4);
    for i in 0..50 {
        let mut r = test_record(
            1000.0 + f64::from(i),
            &format!("new-key-{i}"),
            &format!("brand/new/{}", i % 7),
        );
        r.event.kind = format!("type{i}");
        let preds = p.predict(
            &crate::Context {
                ts: r.ts,
                event: &r.event,
            },
            5,
        );
        assert!(preds.len() <= 5);
        let sum: f64 = preds.iter().map(|x| x.probability).sum();
        assert!(sum <= 1.0 + 1e-6 && preds.iter().all(|x| x.probability >= 0.0));
        p.observe(&r);
    }
    // Key states are bounded.
    assert!(
        p.keys.len() <= 5,
        "at most max_keys plus an eighth, rounded"
    );
    // Unseen resources come back through their hash buckets.
    let r = test_record(2000.0, "k0", "r/a");
    let preds = p.predict(
        &crate::Context {
            ts: r.ts,
            event: &r.event,
        },
        100,
    );
    assert!(
        preds
            .iter()
            .any(|x| x.resource.as_str().starts_with("brand/new/"))
    );
}

#[test]
fn one_resource_and_bad_histories() {
    let one: Vec<_> = (0..40)
        .map(|i| test_record(f64::from(i), "k", "only"))
        .collect();
    let mut o = small(SMALL_GRU);
    o.max_epochs = 2;
    let m = train(&one, &o, &mut |_| {}).unwrap();
    let mut p = Learned::new(m, 10);
    let preds = p.predict(
        &crate::Context {
            ts: 99.0,
            event: &one[0].event,
        },
        5,
    );
    assert_eq!(preds[0].resource.as_str(), "only");
    assert!(matches!(
        train(&[], &o, &mut |_| {}),
        Err(TrainError::Empty)
    ));
    let mut back = one.clone();
    back[5].ts = 1.0;
    assert!(matches!(
        train(&back, &o, &mut |_| {}),
        Err(TrainError::OutOfOrder(6))
    ));
    let mut none = one.clone();
    for r in &mut none {
        r.reads.clear();
    }
    assert!(matches!(
        train(&none, &o, &mut |_| {}),
        Err(TrainError::NoReads)
    ));
}

#[test]
fn bad_model_directories_are_refused_with_reasons() {
    let recs = cyclic(120);
    let mut o = small(SMALL_GRU);
    o.max_epochs = 1;
    let mut m = train(&recs, &o, &mut |_| {}).unwrap();
    let dir = tempfile::tempdir().unwrap();
    m.save(dir.path()).unwrap();
    let cfg = dir.path().join(model::CONFIG);
    let weights = dir.path().join(model::WEIGHTS);
    let text = std::fs::read_to_string(&cfg).unwrap();
    let err = |d: &std::path::Path| Learned::load(d, 10).err().unwrap().to_string();

    assert!(err(&dir.path().join("missing")).contains("missing"));
    std::fs::write(
        &cfg,
        text.replace("\"format_version\": 1", "\"format_version\": 99"),
    )
    .unwrap();
    assert!(err(dir.path()).contains("format version"));
    std::fs::write(&cfg, text.replace("prewarm-model", "something-else")).unwrap();
    assert!(err(dir.path()).contains("not a prewarm model"));
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["vocab"]["resource_buckets"] = 3.into();
    std::fs::write(&cfg, v.to_string()).unwrap();
    assert!(err(dir.path()).contains("vocabulary mismatch"));
    std::fs::write(&cfg, &text).unwrap();
    let mut w = std::fs::read(&weights).unwrap();
    let n = w.len();
    w[n - 3] ^= 1;
    std::fs::write(&weights, &w).unwrap();
    assert!(err(dir.path()).contains("another training run"));
    std::fs::remove_file(&weights).unwrap();
    assert!(err(dir.path()).contains("missing"));
}

/// A batch (inferred on all cores) answers exactly what one `predict` per event answers, and
/// `observe_batch` leaves the states one `observe` per record leaves.
#[test]
fn batched_predictions_equal_one_by_one_predictions() {
    for arch in [SMALL_GRU, SMALL_TF] {
        let recs = cyclic(400);
        let mut o = small(arch);
        o.max_epochs = 3;
        let model = || train(&recs[..300], &o, &mut |_| {}).unwrap();
        let (mut one, mut batch) = (Learned::new(model(), 1000), Learned::new(model(), 1000));
        for r in &recs[..300] {
            one.observe(r);
        }
        batch.observe_batch(&recs[..300]);
        let ctxs: Vec<Context<'_>> = recs[300..]
            .iter()
            .map(|r| Context {
                ts: r.ts,
                event: &r.event,
            })
            .collect();
        assert!(ctxs.len() >= PARALLEL_BATCH);
        let a: Vec<Vec<Prediction>> = ctxs.iter().map(|c| one.predict(c, 5)).collect();
        let b = batch.predict_batch(&ctxs, 5);
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert!(!x.is_empty());
            assert_eq!(x.len(), y.len());
            for (p, q) in x.iter().zip(y) {
                assert_eq!(p.resource, q.resource);
                assert!((p.probability - q.probability).abs() < 1e-9);
            }
        }
        // Observing the batch's executions (one by one, or as a batch on all cores) leaves
        // the same key states: the next predictions are the same.
        for r in &recs[300..] {
            one.observe(r);
        }
        batch.observe_batch(&recs[300..]);
        for c in &ctxs[..24] {
            let (x, y) = (one.predict(c, 3), batch.predict(c, 3));
            assert_eq!(x.len(), y.len());
            for (p, q) in x.iter().zip(&y) {
                assert_eq!(p.resource, q.resource);
                assert!((p.probability - q.probability).abs() < 1e-6);
            }
        }
    }
}

#[test]
fn the_vectorisable_exp_matches_libm() {
    let mut worst = 0f64;
    let mut x = -87.0f32;
    while x < 88.0 {
        let (a, b) = (super::kernel::exp_f32(x), x.exp());
        worst = worst.max(((a - b) / b).abs() as f64);
        x += 0.013;
    }
    assert!(worst < 1e-6, "relative error {worst}");
    assert_eq!(super::kernel::exp_f32(-1000.0), (-87.3f32).exp().max(1e-38));
    assert!(super::kernel::exp_f32(1000.0).is_infinite());
    assert_eq!(super::kernel::exp_f32(0.0), 1.0);
}
