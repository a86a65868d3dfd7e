//! `recode model random`'s shapes and bf16 rounding (moved from a unit test: the model crate's
//! lib is built with `test = false`).

use recode_model::random::{f32_to_bf16, shape};

#[test]
fn real_shapes_have_their_parameter_counts() {
    // The counts of the published checkpoints (0.49 B with the tied head; 7.61 B).
    assert_eq!(shape("qwen2.5-0.5b").unwrap().parameters(), 494_032_768);
    assert_eq!(shape("qwen2.5-7b").unwrap().parameters(), 7_615_616_512);
    assert!(shape("gpt-5").is_err());
}

#[test]
fn bf16_rounds_to_nearest() {
    assert_eq!(f32_to_bf16(1.0), 0x3f80);
    assert_eq!(f32::from_bits((f32_to_bf16(0.02) as u32) << 16), 0.020019531);
    assert_eq!(f32_to_bf16(-2.0), 0xc000);
}
