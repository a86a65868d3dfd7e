//! Sampling on the device (#28 item 5): on wgpu, unfiltered and greedy sampling leave the logits on
//! the device and bring back only ids and log-probs. Same seeds, same tiny model: the tokens must
//! be the CPU's (host sampler) and the log-probs within the backends' rounding. Runs on Mesa's
//! lavapipe in CI.

use recode_core::api::SamplingParams;
use recode_core::registry::ModelContext;
use recode_core::spec::{AdapterKind, BackendKind, BackendSpec, Precision, TrainingSpec};

mod common;
use common::{adapter, factory_spec, has_vulkan, transformer_factory, write_tiny};

#[test]
fn wgpu_samples_on_the_device_what_the_cpu_samples_on_the_host() {
    if !has_vulkan("WGPU sampling check") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write_tiny(dir.path(), "qwen2", false, 41);
    let factory = transformer_factory();
    let spec = factory_spec(dir.path(), adapter(AdapterKind::Lora, &["q_proj"]));
    let training = TrainingSpec::default();
    // Two rows share a prompt (the prefill runs it once and copies the row on the device).
    let prompts = vec![vec![5u32, 9, 33, 2], vec![12u32, 40], vec![5u32, 9, 33, 2]];
    for temperature in [0.0, 1.0, 0.7] {
        let params = SamplingParams {
            max_new_tokens: 12,
            temperature,
            top_p: 1.0,
            top_k: 0,
            stop_token_ids: vec![],
            stop_strings: vec![],
            seed: 7,
            row_seeds: vec![],
        };
        let run = |kind: BackendKind| {
            let backend = BackendSpec {
                kind,
                device: 0,
                precision: Precision::F32,
            };
            let mut p = factory(&ModelContext {
                spec: &spec,
                backend: &backend,
                training: &training,
                seed: 3,
            })
            .unwrap();
            p.generate(&prompts, &params).unwrap()
        };
        let (cpu, gpu) = (run(BackendKind::Cpu), run(BackendKind::Wgpu));
        let lens: Vec<usize> = cpu.iter().map(|g| g.tokens.len()).collect();
        eprintln!("temperature {temperature}: tokens per row {lens:?}");
        assert!(
            lens.iter().sum::<usize>() >= 2 * lens.len(),
            "the rows stopped at once; the check needs several tokens: {lens:?}"
        );
        for (r, (a, b)) in cpu.iter().zip(&gpu).enumerate() {
            assert_eq!(a.tokens, b.tokens, "temperature {temperature}, row {r}");
            for (x, y) in a.logprobs.iter().zip(&b.logprobs) {
                assert!(
                    (x - y).abs() < 1e-4,
                    "temperature {temperature}, row {r}: log-prob {x} on the cpu, {y} on wgpu"
                );
            }
        }
    }
}
