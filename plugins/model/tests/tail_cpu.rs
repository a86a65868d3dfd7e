//! `tail_cpu`'s RMSNorm, SwiGLU, RoPE and DoRA autodiff ops (and the DoRA norm) against burn's
//! own ops (the formulas model.rs runs on every other backend) and against values worked out in f64 here: outputs and the
//! gradients of every input, tracked or not; the same bits for 1, 2 and 3 rayon threads; and
//! `None` (burn's path) where they do not apply.

use burn::backend::{Autodiff, NdArray};
use burn::tensor::activation::silu;
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use recode_model::tail_cpu;

type B = NdArray<f32>;
type Ad = Autodiff<B>;

fn random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.gen_range(-scale..scale)).collect()
}

fn t2(v: &[f32], shape: [usize; 2]) -> Tensor<Ad, 2> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), &Default::default())
}

fn t1(v: &[f32]) -> Tensor<Ad, 1> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Default::default())
}

fn vals<const D: usize>(t: Tensor<Ad, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

fn grad_vals<const D: usize>(
    t: &Tensor<Ad, D>,
    g: &<Ad as burn::tensor::backend::AutodiffBackend>::Gradients,
) -> Vec<f32> {
    t.grad(g)
        .unwrap()
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap()
}

fn close(name: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{name}[{i}] = {g}, want {w}");
    }
}

/// Whether two runs gave the same bits.
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// A gradient summed over `rows` rows against its f64 value: the f32 sum's error grows with
/// sqrt(rows).
fn close_sums(name: &str, got: &[f32], want: &[f64], rows: usize) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = 1e-4 * (1.0 + w.abs()) * (rows as f64).sqrt();
        assert!((*g as f64 - w).abs() < tol, "{name}[{i}] = {g}, want {w}");
    }
}

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

/// Output and gradients (x, w) of RMSNorm with a non-uniform upstream gradient `dy`.
fn rms_run(x: &[f32], w: &[f32], dy: &[f32], rows: usize, fused: bool) -> [Vec<f32>; 3] {
    let n = w.len();
    let (xt, wt) = (t2(x, [rows, n]).require_grad(), t1(w).require_grad());
    let y = if fused {
        tail_cpu::rms_norm(&xt, &wt, 1e-6).expect("the CPU training backend takes the fused op")
    } else {
        let var = xt.clone().powi_scalar(2).mean_dim(1);
        xt.clone() * (var + 1e-6).sqrt().recip() * wt.clone().unsqueeze::<2>()
    };
    let g = (y.clone() * t2(dy, [rows, n])).sum().backward();
    [vals(y), grad_vals(&xt, &g), grad_vals(&wt, &g)]
}

fn swiglu_run(g: &[f32], u: &[f32], dy: &[f32], shape: [usize; 2], fused: bool) -> [Vec<f32>; 3] {
    let (gt, ut) = (t2(g, shape).require_grad(), t2(u, shape).require_grad());
    let y = if fused {
        tail_cpu::swiglu(&gt, &ut).expect("the CPU training backend takes the fused op")
    } else {
        silu(gt.clone()) * ut.clone()
    };
    let grads = (y.clone() * t2(dy, shape)).sum().backward();
    [vals(y), grad_vals(&gt, &grads), grad_vals(&ut, &grads)]
}

#[test]
fn rms_norm_matches_burn_and_an_f64_computation() {
    // 300 rows: more than four of the weight gradient's 64-row blocks, the last one short.
    for (rows, n) in [(1, 7), (5, 64), (300, 896)] {
        let (x, w, dy) = (random(rows * n, 1, 3.0), random(n, 2, 1.5), random(rows * n, 3, 1.0));
        let fused = rms_run(&x, &w, &dy, rows, true);
        let burn = rms_run(&x, &w, &dy, rows, false);
        for (i, name) in ["y", "dx", "dw"].iter().enumerate() {
            close(&format!("rms ({rows}x{n}) {name} vs burn"), &fused[i], &burn[i], 1e-4);
        }
        // f64: y = x r w, dx = r dy w - x r^3 mean(dy w x), dw = sum_rows dy x r.
        let mut want_dw = vec![0f64; n];
        for r in 0..rows {
            let row = |v: &[f32], i: usize| v[r * n + i] as f64;
            let ms = (0..n).map(|i| row(&x, i).powi(2)).sum::<f64>() / n as f64;
            let inv = 1.0 / (ms + 1e-6).sqrt();
            let dot = (0..n).map(|i| row(&dy, i) * w[i] as f64 * row(&x, i)).sum::<f64>() / n as f64;
            for i in 0..n {
                let y = row(&x, i) * inv * w[i] as f64;
                let dx = inv * row(&dy, i) * w[i] as f64 - row(&x, i) * inv.powi(3) * dot;
                assert!(
                    (fused[0][r * n + i] as f64 - y).abs() < 1e-4 * (1.0 + y.abs()),
                    "y[{r},{i}]"
                );
                assert!(
                    (fused[1][r * n + i] as f64 - dx).abs() < 1e-4 * (1.0 + dx.abs()),
                    "dx[{r},{i}]"
                );
                want_dw[i] += row(&dy, i) * row(&x, i) * inv;
            }
        }
        close_sums("dw", &fused[2], &want_dw, rows);
    }
}

#[test]
fn swiglu_matches_burn_and_an_f64_computation() {
    for shape in [[1, 3], [7, 130], [64, 4864]] {
        let len = shape[0] * shape[1];
        let (g, u, dy) = (random(len, 4, 8.0), random(len, 5, 2.0), random(len, 6, 1.0));
        let fused = swiglu_run(&g, &u, &dy, shape, true);
        let burn = swiglu_run(&g, &u, &dy, shape, false);
        for (i, name) in ["y", "dgate", "dup"].iter().enumerate() {
            close(&format!("swiglu {shape:?} {name} vs burn"), &fused[i], &burn[i], 1e-5);
        }
        for i in 0..len {
            let (a, b, d) = (g[i] as f64, u[i] as f64, dy[i] as f64);
            let s = 1.0 / (1.0 + (-a).exp());
            let want = [a * s * b, d * b * (s + a * s * (1.0 - s)), d * a * s];
            for (k, w) in want.iter().enumerate() {
                let got = fused[k][i] as f64;
                assert!(
                    (got - w).abs() < 1e-5 * (1.0 + w.abs()),
                    "swiglu {shape:?} output {k} at {i}: {got}, want {w}"
                );
            }
        }
    }
}

#[test]
fn the_bits_do_not_depend_on_the_thread_count() {
    let (rows, n) = (200, 96);
    let (x, w, dy) = (random(rows * n, 7, 2.0), random(n, 8, 1.0), random(rows * n, 9, 1.0));
    let rms: Vec<_> = [1, 2, 3]
        .iter()
        .map(|&th| in_pool(th, || rms_run(&x, &w, &dy, rows, true)))
        .collect();
    let swi: Vec<_> = [1, 2, 3]
        .iter()
        .map(|&th| in_pool(th, || swiglu_run(&x, &dy, &x, [rows, n], true)))
        .collect();
    for th in 1..3 {
        for k in 0..3 {
            let n = th + 1;
            assert!(
                same_bits(&rms[th][k], &rms[0][k]),
                "rms_norm output {k}: {n} threads differ from 1"
            );
            assert!(
                same_bits(&swi[th][k], &swi[0][k]),
                "swiglu output {k}: {n} threads differ from 1"
            );
        }
    }
}

#[test]
fn untracked_inputs_and_frozen_weights() {
    // A frozen norm weight (LoRA/DoRA training) gets no gradient; x still does.
    let (rows, n) = (9, 16);
    let (x, w) = (random(rows * n, 10, 1.0), random(n, 11, 1.0));
    let (xt, wt) = (t2(&x, [rows, n]).require_grad(), t1(&w));
    let y = tail_cpu::rms_norm(&xt, &wt, 1e-6).unwrap();
    let g = y.sum().backward();
    assert!(xt.grad(&g).is_some());
    assert!(wt.grad(&g).is_none());
    // Nothing tracked: the op still computes, and matches burn's forward.
    let y = tail_cpu::swiglu(&t2(&x, [rows, n]), &t2(&x, [rows, n])).unwrap();
    let want = silu(t2(&x, [rows, n])) * t2(&x, [rows, n]);
    close("untracked swiglu", &vals(y), &vals(want), 1e-6);
}

#[test]
fn other_backends_and_dtypes_go_to_burn() {
    let x = Tensor::<B, 2>::from_data(TensorData::new(vec![1f32; 6], [2, 3]), &Default::default());
    let w = Tensor::<B, 1>::from_data(TensorData::new(vec![1f32; 3], [3]), &Default::default());
    assert!(tail_cpu::swiglu(&x, &x).is_none(), "the plain backend is fused.rs's");
    assert!(tail_cpu::rms_norm(&x, &w, 1e-6).is_none());
    let x64 =
        Tensor::<Autodiff<NdArray<f64>>, 2>::from_data(TensorData::new(vec![1f64; 6], [2, 3]), &Default::default());
    assert!(
        tail_cpu::swiglu(&x64, &x64).is_none(),
        "f64 (the gradient checks) keeps burn's ops"
    );
    // A strided (transposed) input is not taken either.
    let xt = t2(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]).transpose();
    assert!(tail_cpu::swiglu(&xt, &xt).is_none());
}

/// RoPE of `heads` heads of size `hd` per row, with per-row angles; output and input gradient.
fn rope_run(x: &[f32], ang: &[f32], dy: &[f32], rows: usize, heads: usize, hd: usize, fused: bool) -> [Vec<f32>; 2] {
    let half = hd / 2;
    let cos: Vec<f32> = ang.iter().map(|a| a.cos()).collect();
    let sin: Vec<f32> = ang.iter().map(|a| a.sin()).collect();
    let xt = t2(x, [rows, heads * hd]).require_grad();
    let y = if fused {
        tail_cpu::rope(&xt, &cos, &sin, hd).expect("the CPU training backend takes the fused op")
    } else {
        // model.rs's Step::rope on [rows, heads, hd] with the tables broadcast over heads.
        let x3 = xt.clone().reshape([rows, heads, hd]);
        let table =
            |v: &[f32]| Tensor::<Ad, 3>::from_data(TensorData::new(v.to_vec(), [rows, 1, half]), &Default::default());
        let (c, s) = (table(&cos), table(&sin));
        let x1 = x3.clone().slice([0..rows, 0..heads, 0..half]);
        let x2 = x3.slice([0..rows, 0..heads, half..hd]);
        Tensor::cat(
            vec![x1.clone() * c.clone() - x2.clone() * s.clone(), x2 * c + x1 * s],
            2,
        )
        .reshape([rows, heads * hd])
    };
    let g = (y.clone() * t2(dy, [rows, heads * hd])).sum().backward();
    [vals(y), grad_vals(&xt, &g)]
}

#[test]
fn rope_matches_burn_and_an_f64_rotation() {
    for (rows, heads, hd) in [(1, 1, 2), (6, 2, 8), (70, 14, 64)] {
        let half = hd / 2;
        let len = rows * heads * hd;
        let (x, dy) = (random(len, 12, 2.0), random(len, 13, 1.0));
        let ang = random(rows * half, 14, 40.0);
        let fused = rope_run(&x, &ang, &dy, rows, heads, hd, true);
        let burn = rope_run(&x, &ang, &dy, rows, heads, hd, false);
        close(
            &format!("rope ({rows},{heads},{hd}) y vs burn"),
            &fused[0],
            &burn[0],
            1e-6,
        );
        close(
            &format!("rope ({rows},{heads},{hd}) dx vs burn"),
            &fused[1],
            &burn[1],
            1e-6,
        );
        for r in 0..rows {
            for h in 0..heads {
                for d in 0..half {
                    let (c, s) = (ang[r * half + d].cos() as f64, ang[r * half + d].sin() as f64);
                    let (i1, i2) = (r * heads * hd + h * hd + d, r * heads * hd + h * hd + d + half);
                    let (x1, x2, d1, d2) = (x[i1] as f64, x[i2] as f64, dy[i1] as f64, dy[i2] as f64);
                    let want = [
                        (i1, 0, x1 * c - x2 * s),
                        (i2, 0, x2 * c + x1 * s),
                        (i1, 1, d1 * c + d2 * s),
                        (i2, 1, d2 * c - d1 * s),
                    ];
                    for (i, k, w) in want {
                        assert!(
                            (fused[k][i] as f64 - w).abs() < 1e-5,
                            "rope output {k} at {i}: {}, want {w}",
                            fused[k][i]
                        );
                    }
                }
            }
        }
    }
    let x = random(4 * 6, 15, 1.0);
    assert!(
        tail_cpu::rope(&t2(&x, [4, 6]), &[0.0; 8], &[0.0; 8], 4).is_none(),
        "6 columns are not whole heads of 4"
    );
    assert!(
        tail_cpu::rope(&t2(&x, [4, 6]), &[0.0; 3], &[0.0; 3], 3).is_none(),
        "odd head size"
    );
}

#[test]
fn rope_bits_do_not_depend_on_the_thread_count() {
    let (rows, heads, hd) = (50, 4, 16);
    let (x, dy, ang) = (
        random(rows * heads * hd, 16, 1.0),
        random(rows * heads * hd, 17, 1.0),
        random(rows * hd / 2, 18, 9.0),
    );
    let runs: Vec<_> = [1, 2, 3]
        .iter()
        .map(|&th| in_pool(th, || rope_run(&x, &ang, &dy, rows, heads, hd, true)))
        .collect();
    for th in 1..3 {
        for k in 0..2 {
            let same = same_bits(&runs[th][k], &runs[0][k]);
            assert!(same, "rope output {k}: {} threads differ from 1", th + 1);
        }
    }
}

/// DoRA's output `base + base (scale - 1) + lora scale s` and the gradients of base, lora, scale.
fn dora_run(base: &[f32], lora: &[f32], scale: &[f32], dy: &[f32], rows: usize, fused: bool) -> [Vec<f32>; 4] {
    let (n, s) = (scale.len(), 0.75);
    let bt = t2(base, [rows, n]).require_grad();
    let lt = t2(lora, [rows, n]).require_grad();
    let st = t2(scale, [1, n]).require_grad();
    let y = if fused {
        tail_cpu::dora_combine(&bt, &lt, &st, s).expect("the CPU training backend takes the fused op")
    } else {
        // model.rs's Linear::finish without dropout.
        bt.clone() + bt.clone() * (st.clone() - 1.0) + lt.clone() * st.clone() * s
    };
    let g = (y.clone() * t2(dy, [rows, n])).sum().backward();
    [vals(y), grad_vals(&bt, &g), grad_vals(&lt, &g), grad_vals(&st, &g)]
}

#[test]
fn dora_output_matches_burn_and_an_f64_computation() {
    for (rows, n) in [(1, 3), (130, 128), (300, 896)] {
        let (base, lora, dy) = (
            random(rows * n, 20, 2.0),
            random(rows * n, 21, 0.5),
            random(rows * n, 22, 1.0),
        );
        let scale: Vec<f32> = random(n, 23, 0.1).iter().map(|d| 1.0 + d).collect();
        let fused = dora_run(&base, &lora, &scale, &dy, rows, true);
        let burn = dora_run(&base, &lora, &scale, &dy, rows, false);
        for (k, name) in ["y", "dbase", "dlora"].iter().enumerate() {
            close(&format!("dora ({rows}x{n}) {name} vs burn"), &fused[k], &burn[k], 1e-6);
        }
        close(
            &format!("dora ({rows}x{n}) dscale vs burn"),
            &fused[3],
            &burn[3],
            1e-4 * (rows as f32).sqrt(),
        );
        let mut want_ds = vec![0f64; n];
        for r in 0..rows {
            for j in 0..n {
                let i = r * n + j;
                let (b, l, d, sc) = (base[i] as f64, lora[i] as f64, dy[i] as f64, scale[j] as f64);
                let want = [b * sc + l * sc * 0.75, d * sc, d * 0.75 * sc];
                for (k, w) in want.iter().enumerate() {
                    assert!(
                        (fused[k][i] as f64 - w).abs() < 1e-5 * (1.0 + w.abs()),
                        "dora output {k} at [{r},{j}]"
                    );
                }
                want_ds[j] += d * (b + 0.75 * l);
            }
        }
        close_sums("dscale", &fused[3], &want_ds, rows);
    }
}

#[test]
fn dora_norm_matches_burn_and_the_bits_do_not_depend_on_the_thread_count() {
    let (rows, n) = (200, 150);
    let (w, delta) = (random(rows * n, 24, 0.2), random(rows * n, 25, 0.01));
    let (wt, dt) = (t2(&w, [rows, n]), t2(&delta, [rows, n]));
    let want = vals((wt.clone() + dt.clone()).powi_scalar(2).sum_dim(0).sqrt());
    let runs: Vec<Vec<f32>> = [1, 2, 3]
        .iter()
        .map(|&th| in_pool(th, || vals(tail_cpu::dora_norm(&wt, &dt).unwrap())))
        .collect();
    close("dora norm vs burn", &runs[0], &want, 1e-5);
    for j in 0..n {
        let f64_norm = (0..rows)
            .map(|i| (w[i * n + j] as f64 + delta[i * n + j] as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!((runs[0][j] as f64 - f64_norm).abs() < 1e-5 * f64_norm, "norm[{j}]");
    }
    for (th, run) in [2, 3].iter().zip(&runs[1..]) {
        assert!(same_bits(run, &runs[0]), "dora norm: {th} threads differ from 1");
    }
    let (base, lora, dy) = (
        random(rows * n, 26, 1.0),
        random(rows * n, 27, 1.0),
        random(rows * n, 28, 1.0),
    );
    let scale = random(n, 29, 2.0);
    let dora: Vec<_> = [1, 2, 3]
        .iter()
        .map(|&th| in_pool(th, || dora_run(&base, &lora, &scale, &dy, rows, true)))
        .collect();
    for th in 1..3 {
        for k in 0..4 {
            let same = same_bits(&dora[th][k], &dora[0][k]);
            assert!(same, "dora output {k}: {} threads differ from 1", th + 1);
        }
    }
}
