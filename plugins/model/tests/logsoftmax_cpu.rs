//! The log-prob head's host softmax (`logsoftmax_cpu::selected`) against burn's `log_softmax`,
//! `gather` and `exp`, on the plain and the autodiff CPU backend, and the same bits whatever the
//! size of rayon's pool.

use burn::backend::{Autodiff, NdArray};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use recode_model::logsoftmax_cpu::selected;

type B = NdArray<f32>;

fn case<Bk: Backend>(rows: usize, vocab: usize) -> (Tensor<Bk, 2>, Vec<i64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(rows as u64 * 7 + vocab as u64);
    // Logits of a trained head: a spread of several units, one row far from zero.
    let v: Vec<f32> = (0..rows * vocab)
        .map(|i| rng.gen_range(-6.0f32..6.0) + if i / vocab == 0 { 80.0 } else { 0.0 })
        .collect();
    let targets = (0..rows).map(|_| rng.gen_range(0..vocab as i64)).collect();
    (
        Tensor::from_data(TensorData::new(v, [rows, vocab]), &Default::default()),
        targets,
    )
}

fn values<Bk: Backend>(t: Tensor<Bk, 2>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

fn check<Bk: Backend>(rows: usize, vocab: usize) {
    let (logits, targets) = case::<Bk>(rows, vocab);
    let (value, probs) = selected(&logits, &targets, true).expect("the CPU backend takes the host path");
    let lsm = log_softmax(logits.clone(), 1);
    let ids = Tensor::<Bk, 1, Int>::from_data(TensorData::new(targets.clone(), [rows]), &Default::default());
    let want_value = values(lsm.clone().gather(1, ids.reshape([rows, 1])));
    let want_probs = values(lsm.exp());
    for (r, (g, w)) in values(value).iter().zip(&want_value).enumerate() {
        assert!(
            (g - w).abs() <= 2e-5 * (1.0 + w.abs()),
            "row {r}: log-prob {g}, burn {w}"
        );
    }
    for (g, w) in values(probs.unwrap()).iter().zip(&want_probs) {
        assert!((g - w).abs() <= 1e-6 + 1e-5 * w, "probability {g}, burn {w}");
    }
    let (only, none) = selected(&logits, &targets, false).unwrap();
    assert!(none.is_none());
    assert_eq!(values(only), values(selected(&logits, &targets, true).unwrap().0));
}

#[test]
fn matches_burns_log_softmax_on_both_cpu_backends() {
    for (rows, vocab) in [(1, 5), (3, 1000), (37, 4099)] {
        check::<B>(rows, vocab);
        check::<Autodiff<B>>(rows, vocab);
    }
}

#[test]
fn the_same_bits_for_any_pool_size() {
    let (logits, targets) = case::<B>(29, 3001);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let (v, p) = selected(&logits, &targets, true).unwrap();
            (values(v), values(p.unwrap()))
        })
    };
    let one = run(1);
    for threads in [2, 3] {
        let other = run(threads);
        let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(
            same(&one.0, &other.0) && same(&one.1, &other.1),
            "{threads} threads differ from 1"
        );
    }
}

#[test]
fn other_dtypes_and_bad_targets_fall_back_to_burn() {
    let (logits, targets) = case::<B>(4, 50);
    assert!(selected(&logits.clone().cast(burn::tensor::DType::F64), &targets, true).is_none());
    assert!(
        selected(&logits, &[0, 1, 2, 50], true).is_none(),
        "a target past the vocabulary"
    );
}
