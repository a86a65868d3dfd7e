//! `gemm_cpu::matmul` (the gemm-crate products on the CPU) against a plain f64 sum, over shapes
//! that cross gemm's paths (k <= 2, small m·n, several k blocks, transposed views on either
//! side); the same bits for 1, 2 and 3 threads; its autodiff op's gradients against burn's matmul.

use burn::backend::{Autodiff, NdArray};
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use recode_model::gemm_cpu::matmul_threads;

type B = NdArray<f32>;
type Ad = Autodiff<B>;

fn random(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..rows * cols).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

fn tensor<Bk: burn::tensor::backend::Backend>(v: &[f32], shape: [usize; 2]) -> Tensor<Bk, 2> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), &Default::default())
}

fn values<Bk: burn::tensor::backend::Backend>(t: Tensor<Bk, 2>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

/// out = op(a) op(b) for a stored [m, k] (or [k, m] when `ta`) and b [k, n] (or [n, k] when `tb`).
fn check(m: usize, k: usize, n: usize, ta: bool, tb: bool) {
    let (a, b) = (random(m, k, 1 + m as u64), random(k, n, 2 + n as u64));
    let a_shape = if ta { [k, m] } else { [m, k] };
    let b_shape = if tb { [n, k] } else { [k, n] };
    let (at, bt) = (tensor::<B>(&a, a_shape), tensor::<B>(&b, b_shape));
    let op = |t: Tensor<B, 2>, yes: bool| if yes { t.transpose() } else { t };
    let runs: Vec<Vec<f32>> = [1, 2, 3]
        .iter()
        .map(|&th| values(matmul_threads(op(at.clone(), ta), op(bt.clone(), tb), th)))
        .collect();
    let get_a = |r: usize, i: usize| if ta { a[i * m + r] } else { a[r * k + i] } as f64;
    let get_b = |i: usize, j: usize| if tb { b[j * k + i] } else { b[i * n + j] } as f64;
    let got = &runs[0];
    assert_eq!(got.len(), m * n);
    for r in 0..m {
        for j in 0..n {
            let want: f64 = (0..k).map(|i| get_a(r, i) * get_b(i, j)).sum();
            let g = got[r * n + j] as f64;
            assert!(
                (g - want).abs() <= 1e-5 * (1.0 + want.abs()) * (k as f64).sqrt(),
                "({m},{k},{n}) ta={ta} tb={tb}: out[{r},{j}] = {g}, want {want}"
            );
        }
    }
    for (th, run) in [2, 3].iter().zip(&runs[1..]) {
        let same = run.iter().zip(got).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(
            same,
            "({m},{k},{n}) ta={ta} tb={tb}: {th} threads differ from 1 in the bits"
        );
    }
}

#[test]
fn products_match_an_f64_sum_and_do_not_depend_on_the_thread_count() {
    let shapes = [
        (1, 7, 5),
        (17, 64, 3),
        (5, 2, 9),
        (6, 1, 4),
        (8, 300, 8),
        (64, 896, 128),
        (300, 1100, 200),
    ];
    for (m, k, n) in shapes {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            check(m, k, n, ta, tb);
        }
    }
}

#[test]
fn f64_tensors_take_the_f64_kernels() {
    type B64 = NdArray<f64>;
    let (a, b) = (random(9, 33, 5), random(33, 4, 6));
    let out = values(matmul_threads(
        tensor::<B64>(&a, [9, 33]),
        tensor::<B64>(&b, [33, 4]),
        2,
    ));
    let want = values(tensor::<B64>(&a, [9, 33]).matmul(tensor::<B64>(&b, [33, 4])));
    for (g, w) in out.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-6, "{g} against burn's {w}");
    }
}

/// The autodiff op's dx (`dy wᵀ`) and dw (`xᵀ dy`) against burn's matmul, with either side or
/// both tracked, inside a graph (the upstream gradient is not all ones).
#[test]
fn gradients_match_burns_matmul() {
    let (m, k, n) = (37, 130, 21);
    let (x, w, up) = (random(m, k, 11), random(k, n, 12), random(m, n, 13));
    for (track_x, track_w) in [(true, true), (true, false), (false, true)] {
        let run = |ours: bool| {
            let mut xt = tensor::<Ad>(&x, [m, k]);
            let mut wt = tensor::<Ad>(&w, [k, n]);
            if track_x {
                xt = xt.require_grad();
            }
            if track_w {
                wt = wt.require_grad();
            }
            let y = if ours {
                matmul_threads(xt.clone() * 2.0, wt.clone(), 2)
            } else {
                (xt.clone() * 2.0).matmul(wt.clone())
            };
            let g = (y.clone() * tensor::<Ad>(&up, [m, n])).sum().backward();
            let dx = track_x.then(|| values(xt.grad(&g).unwrap()));
            let dw = track_w.then(|| values(wt.grad(&g).unwrap()));
            (values(y.inner()), dx, dw)
        };
        let (ours, burn) = (run(true), run(false));
        let close = |a: &[f32], b: &[f32], what: &str| {
            assert_eq!(a.len(), b.len());
            for (p, q) in a.iter().zip(b) {
                assert!(
                    (p - q).abs() <= 1e-4 * (1.0 + q.abs()),
                    "{what}: {p} against burn's {q}"
                );
            }
        };
        close(&ours.0, &burn.0, "forward");
        assert_eq!(ours.1.is_some(), burn.1.is_some());
        if let (Some(a), Some(b)) = (&ours.1, &burn.1) {
            close(a, b, "dx");
        }
        if let (Some(a), Some(b)) = (&ours.2, &burn.2) {
            close(a, b, "dw");
        }
    }
}

/// Batches of matrices (attention's [batch, heads, rows, cols] products): strided batch
/// dimensions (after a swap of dims 1 and 2) and transposed matrices, against burn's matmul; the
/// gradients of both operands too; a broadcast batch falls back to burn.
#[test]
fn batched_products_and_their_gradients_match_burns() {
    let (b, h, t, d, s) = (2, 3, 17, 8, 11);
    let (q, k, up) = (
        random(b * t, h * d, 21),
        random(b * h, s * d, 22),
        random(b * h, t * s, 23),
    );
    // q as the model makes it: [b, t, h, d] swapped to [b, h, t, d] (a strided view).
    let qt = || tensor::<Ad>(&q, [b * t, h * d]).reshape([b, t, h, d]).swap_dims(1, 2);
    let kt = || tensor::<Ad>(&k, [b * h, s * d]).reshape([b, h, s, d]);
    let run = |ours: bool| {
        let (qv, kv) = (qt().require_grad(), kt().require_grad());
        let scores = if ours {
            matmul_threads(qv.clone(), kv.clone().swap_dims(2, 3), 2)
        } else {
            qv.clone().matmul(kv.clone().swap_dims(2, 3))
        };
        let up = tensor::<Ad>(&up, [b * h, t * s]).reshape([b, h, t, s]);
        let g = (scores.clone() * up).sum().backward();
        let flat = |x: Tensor<B, 4>| x.into_data().convert::<f32>().into_vec::<f32>().unwrap();
        (
            flat(scores.inner()),
            flat(qv.grad(&g).unwrap()),
            flat(kv.grad(&g).unwrap()),
        )
    };
    let (ours, burn) = (run(true), run(false));
    for (what, a, c) in [
        ("scores", &ours.0, &burn.0),
        ("dq", &ours.1, &burn.1),
        ("dk", &ours.2, &burn.2),
    ] {
        assert_eq!(a.len(), c.len(), "{what}");
        for (p, r) in a.iter().zip(c.iter()) {
            assert!(
                (p - r).abs() <= 1e-4 * (1.0 + r.abs()),
                "{what}: {p} against burn's {r}"
            );
        }
    }
    let one = tensor::<B>(&k[..s * d], [s, d]).reshape([1, 1, s, d]);
    let many = tensor::<B>(&q[..2 * 3 * 4 * s], [6, 4 * s]).reshape([2, 3, 4, s]);
    let broadcast = matmul_threads(many.clone(), one.clone(), 2);
    assert_eq!(broadcast.dims(), [2, 3, 4, d]);
    let want = many.matmul(one);
    let (got, want) = (values(broadcast.reshape([24, d])), values(want.reshape([24, d])));
    assert_eq!(got, want, "a broadcast batch goes to burn's matmul");
}
